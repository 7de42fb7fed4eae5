//! A synthetic shop site of any number of pages, rendered on request (nothing
//! on disk), for the crawl benchmark (`scripts/bench-crawl.sh`).
//!
//! A site of `n` pages has `listings = ceil(n / 21)` listing pages and
//! `n - listings` item pages, 20 items per listing (the last listings may hold
//! fewer or none). Listing 1 is `/`, listing `k` is `/list/{k}.html`, item `i`
//! is `/item/{i}.html`. Listing `k` links to home, to listings `k - 1`, `k + 1`,
//! `2k` and `2k + 1` (a binary tree, so every page is within
//! `log2(listings) + 1` links of home) and to its items; an item links to home,
//! its listing and three other items. Every link stays on the site, so a
//! same-site crawl from `/` reaches exactly `n` distinct pages. Pages are
//! about the size of the catalogue fixture's (listing ~2.5 KB, item ~1.5 KB) and
//! the same on every request. `/robots.txt` allows everything; any other path
//! is 404.

use std::fmt::Write;

/// Items on one listing page.
pub const PER_LISTING: u64 = 20;

const ADJECTIVES: [&str; 16] = [
    "Nordic",
    "Rustic",
    "Vintage",
    "Compact",
    "Midnight",
    "Copper",
    "Linen",
    "Bamboo",
    "Velvet",
    "Pocket",
    "Hand-made",
    "Arctic",
    "Golden",
    "Crème",
    "Zürich",
    "Naïve",
];
const NOUNS: [&str; 16] = [
    "Café Table",
    "Notebook",
    "Teapot",
    "Lantern",
    "Desk Lamp",
    "Kite",
    "Atlas",
    "Chess Set",
    "Puzzle Box",
    "Fountain Pen",
    "Watering Can",
    "Headphones",
    "Record Player",
    "Soufflé Dish",
    "Speaker",
    "Blanket",
];
const WORDS: [&str; 16] = [
    "sturdy", "light", "crafted", "from", "oak", "and", "steel", "with", "a", "matte", "finish", "that", "lasts",
    "years", "of", "use",
];

/// The shape of a generated site of `pages` pages.
#[derive(Debug, Clone, Copy)]
pub struct Site {
    listings: u64,
    items: u64,
}

/// What a path of the site answers.
#[derive(Debug, PartialEq, Eq)]
pub enum Page {
    /// `/robots.txt`.
    Robots,
    /// Listing page `k` (1-based; 1 is `/`).
    Listing(u64),
    /// Item page `i` (1-based).
    Item(u64),
    /// Anything else.
    NotFound,
}

impl Site {
    /// A site of exactly `pages` pages (at least 1).
    pub fn new(pages: u64) -> anyhow::Result<Self> {
        anyhow::ensure!(pages >= 1, "--generate needs at least 1 page, got {pages}");
        let listings = pages.div_ceil(PER_LISTING + 1);
        Ok(Site { listings, items: pages - listings })
    }

    /// Total pages (listings + items).
    pub fn pages(&self) -> u64 {
        self.listings + self.items
    }

    /// Which page `path` names.
    pub fn route(&self, path: &str) -> Page {
        let num = |rest: &str, max: u64| -> Option<u64> {
            let n = rest.strip_suffix(".html")?;
            // no leading zeros or signs: one spelling per page
            if n.is_empty() || n.starts_with('0') || !n.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            n.parse().ok().filter(|&n| n >= 1 && n <= max)
        };
        if path == "/" {
            Page::Listing(1)
        } else if path == "/robots.txt" {
            Page::Robots
        } else if let Some(rest) = path.strip_prefix("/list/") {
            // listing 1 is only `/`
            num(rest, self.listings).filter(|&k| k > 1).map_or(Page::NotFound, Page::Listing)
        } else if let Some(rest) = path.strip_prefix("/item/") {
            num(rest, self.items).map_or(Page::NotFound, Page::Item)
        } else {
            Page::NotFound
        }
    }

    fn listing_href(k: u64) -> String {
        if k == 1 { "/".to_string() } else { format!("/list/{k}.html") }
    }

    /// The HTML of listing page `k`.
    pub fn listing(&self, k: u64) -> String {
        let mut s = String::with_capacity(3072);
        let _ = write!(
            s,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>Listing {k} of {} | Generated Shop</title>\n\
             <style>body{{font-family:sans-serif;margin:2em auto;max-width:50em}}article.product{{display:inline-block;width:14em}}</style>\n\
             </head>\n<body>\n<nav class=\"breadcrumb\"><a href=\"/\">Home</a> › Listing {k}</nav>\n<h1>Listing {k}</h1>\n<section class=\"products\">\n",
            self.listings
        );
        let first = (k - 1) * PER_LISTING + 1;
        for i in first..=(k * PER_LISTING).min(self.items) {
            let _ = writeln!(
                s,
                "<article class=\"product\"><h3><a href=\"/item/{i}.html\">{}</a></h3><p class=\"price\">€{}</p></article>",
                name(i),
                price(i)
            );
        }
        s.push_str("</section>\n<ul class=\"pager\">");
        for (rel, n) in [("previous", k.wrapping_sub(1)), ("next", k + 1), ("down", 2 * k), ("down", 2 * k + 1)] {
            if n >= 1 && n <= self.listings && n != k {
                let _ = write!(s, "<li class=\"{rel}\"><a href=\"{}\">listing {n}</a></li>", Self::listing_href(n));
            }
        }
        s.push_str("</ul>\n</body>\n</html>\n");
        s
    }

    /// The HTML of item page `i`.
    pub fn item(&self, i: u64) -> String {
        let mut s = String::with_capacity(2048);
        let listing = (i - 1) / PER_LISTING + 1;
        let _ = write!(
            s,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{name} | Generated Shop</title>\n</head>\n<body>\n\
             <nav class=\"breadcrumb\"><a href=\"/\">Home</a> › <a href=\"{}\">Listing {listing}</a></nav>\n\
             <article class=\"product\" data-sku=\"GEN-{i:07}\">\n<h1>{name}</h1>\n<p class=\"price\">€{}</p>\n<p class=\"stock\">{} in stock</p>\n<p class=\"description\">",
            Self::listing_href(listing),
            price(i),
            mix(i ^ 0x5157) % 40,
            name = name(i),
        );
        let mut h = mix(i);
        for w in 0..120u64 {
            if w % 16 == 0 {
                h = mix(h ^ w);
            }
            if w > 0 {
                s.push(' ');
            }
            s.push_str(WORDS[((h >> ((w % 16) * 4)) & 15) as usize]);
        }
        s.push_str(".</p>\n</article>\n<section class=\"related\"><h2>Related</h2><ul>");
        for r in 1..=3u64 {
            let j = mix(i.wrapping_mul(31).wrapping_add(r)) % self.items + 1;
            let _ = write!(s, "<li><a href=\"/item/{j}.html\">{}</a></li>", name(j));
        }
        s.push_str("</ul></section>\n</body>\n</html>\n");
        s
    }
}

/// splitmix64: a stable pseudo-random number for each input.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn name(i: u64) -> String {
    let h = mix(i);
    format!("{} {}", ADJECTIVES[(h & 15) as usize], NOUNS[((h >> 4) & 15) as usize])
}

fn price(i: u64) -> String {
    let cents = 500 + mix(i ^ 0xA11CE) % 25_000;
    format!("{}.{:02}", cents / 100, cents % 100)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashSet, VecDeque};

    /// The hrefs of a generated page (they are all absolute paths).
    fn hrefs(html: &str) -> Vec<String> {
        html.split("href=\"").skip(1).filter_map(|s| s.split('"').next()).map(str::to_string).collect()
    }

    fn body(site: &Site, path: &str) -> Option<String> {
        match site.route(path) {
            Page::Listing(k) => Some(site.listing(k)),
            Page::Item(i) => Some(site.item(i)),
            Page::Robots | Page::NotFound => None,
        }
    }

    #[test]
    fn a_crawl_from_home_reaches_exactly_every_page_within_a_small_depth() {
        for n in [1, 2, 21, 22, 100, 5_000] {
            let site = Site::new(n).expect("site");
            assert_eq!(site.pages(), n);
            let mut seen: HashSet<String> = HashSet::from(["/".to_string()]);
            let mut queue = VecDeque::from([("/".to_string(), 0u32)]);
            let mut max_depth = 0;
            while let Some((path, depth)) = queue.pop_front() {
                max_depth = max_depth.max(depth);
                let html = body(&site, &path).unwrap_or_else(|| panic!("{path} is linked but not served (n = {n})"));
                for h in hrefs(&html) {
                    if seen.insert(h.clone()) {
                        queue.push_back((h, depth + 1));
                    }
                }
            }
            assert_eq!(seen.len() as u64, n, "n = {n}");
            assert!(max_depth <= 14, "depth {max_depth} for n = {n}");
        }
    }

    #[test]
    fn pages_are_stable_and_about_the_catalogue_size() {
        let site = Site::new(50_000).expect("site");
        assert_eq!(site.item(123), site.item(123));
        let (listing, item) = (site.listing(7).len(), site.item(4567).len());
        assert!((1500..4000).contains(&listing), "listing {listing} bytes");
        assert!((1000..2500).contains(&item), "item {item} bytes");
        assert!(site.listing(7).contains("<title>Listing 7 of 2381"));
    }

    #[test]
    fn only_one_spelling_of_each_page_is_served() {
        let site = Site::new(100).expect("site");
        assert_eq!(site.route("/robots.txt"), Page::Robots);
        assert_eq!(site.route("/list/2.html"), Page::Listing(2));
        assert_eq!(site.route("/item/95.html"), Page::Item(95));
        for bad in
            ["/list/1.html", "/list/02.html", "/list/6.html", "/item/0.html", "/item/96.html", "/item/+1.html", "/x"]
        {
            assert_eq!(site.route(bad), Page::NotFound, "{bad}");
        }
        assert!(Site::new(0).is_err());
    }
}
