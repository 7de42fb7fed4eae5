//! robots.txt (RFC 9309) for the limiter: the rules of one origin as fetched
//! (parsed with `texting_robots` for the product token `dc-host`), and what an
//! answer means, kept pure so it is tested without a server.
//!
//! - 2xx: the file's rules (and its `Crawl-delay`) for the TTL; a file that
//!   disallows nothing and asks no delay is [`Rules::AllowAll`], so the
//!   permit server can lease passes for its origin.
//! - 4xx (no file): everything allowed, for the TTL.
//! - 5xx: everything disallowed (RFC 9309 §2.3.1.4) for [`ERROR_TTL`], then asked again.
//! - No answer (connection refused, timeout): everything allowed for
//!   [`ERROR_TTL`]: the request itself then fails with its own error, which
//!   says more than "disallowed" would.

use std::time::Duration;

/// The product token robots.txt groups are matched against.
pub const USER_AGENT: &str = "dc-host";
/// How long a failed robots.txt fetch is remembered.
pub const ERROR_TTL: Duration = Duration::from_secs(60);
/// The most of a robots.txt that is read (RFC 9309 asks for at least 500 KiB).
pub const MAX_BYTES: usize = 512 * 1024;

/// The robots.txt rules of one origin.
pub enum Rules {
    /// No rules: everything may be fetched.
    AllowAll,
    /// Nothing may be fetched, for this reason.
    DisallowAll(String),
    /// The file's rules.
    Parsed(texting_robots::Robot),
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Rules::AllowAll => f.write_str("AllowAll"),
            Rules::DisallowAll(why) => write!(f, "DisallowAll({why:?})"),
            Rules::Parsed(r) => write!(f, "Parsed(delay: {:?})", r.delay),
        }
    }
}

/// The robots.txt URL of the origin of `url` (scheme, host and port); None
/// for URLs that are not http(s).
pub fn robots_url(url: &reqwest::Url) -> Option<String> {
    matches!(url.scheme(), "http" | "https").then(|| texting_robots::get_robots_url(url.as_str()).ok()).flatten()
}

/// Does a robots.txt disallow nothing, for any user-agent? True when no line
/// is a `Disallow` (or one of the misspellings `texting_robots` accepts, all
/// starting with "di") with a path: then every group allows every path.
/// Conservative: any other line starting with "di" and a value counts too.
fn disallows_nothing(body: &[u8]) -> bool {
    body.split(|&b| b == b'\n' || b == b'\r' || b == 0).all(|line| {
        let line = line.split(|&b| b == b'#').next().unwrap_or_default().trim_ascii();
        if !line.get(..2).is_some_and(|k| k.eq_ignore_ascii_case(b"di")) {
            return true;
        }
        let key_end = line.iter().position(|&b| b == b':' || b.is_ascii_whitespace()).unwrap_or(line.len());
        let value = line[key_end..].trim_ascii_start();
        value.strip_prefix(b":").unwrap_or(value).trim_ascii().is_empty()
    })
}

impl Rules {
    /// The rules an answer gives, and how long to keep them (`ttl` for a
    /// real answer, [`ERROR_TTL`] after a failure).
    pub fn from_answer(status: Option<u16>, body: &[u8], robots_url: &str, ttl: Duration) -> (Rules, Duration) {
        match status {
            Some(s) if (200..300).contains(&s) => {
                let body = &body[..body.len().min(MAX_BYTES)];
                match texting_robots::Robot::new(USER_AGENT, body) {
                    // no path can be refused and no delay asked: nothing to look up per URL
                    Ok(r) if r.delay.is_none() && disallows_nothing(body) => (Rules::AllowAll, ttl),
                    Ok(r) => (Rules::Parsed(r), ttl),
                    // unparsable: as if there were no file
                    Err(_) => (Rules::AllowAll, ttl),
                }
            }
            Some(s) if (400..500).contains(&s) => (Rules::AllowAll, ttl),
            Some(s) if s >= 500 => (
                Rules::DisallowAll(format!(
                    "{robots_url} answered {s}, and while robots.txt is unreachable every path counts as disallowed (RFC 9309); it is asked again within {}s",
                    ERROR_TTL.as_secs()
                )),
                ERROR_TTL,
            ),
            // 1xx/3xx left after redirects, or no answer at all
            _ => (Rules::AllowAll, ERROR_TTL),
        }
    }

    /// Why `url` may not be fetched, or None if it may.
    pub fn refusal(&self, url: &str, robots_url: &str) -> Option<String> {
        match self {
            Rules::AllowAll => None,
            Rules::DisallowAll(why) => Some(why.clone()),
            Rules::Parsed(r) => {
                (!r.allowed(url)).then(|| format!("disallowed by {robots_url} for user-agent {USER_AGENT}"))
            }
        }
    }

    /// The `Crawl-delay` the rules ask of us.
    pub fn crawl_delay(&self) -> Option<Duration> {
        match self {
            Rules::Parsed(r) => {
                r.delay.filter(|d| d.is_finite() && *d > 0.0).map(|d| Duration::from_secs_f64(f64::from(d).min(3600.0)))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROBOTS: &str = "http://h.test/robots.txt";
    const TTL: Duration = Duration::from_secs(3600);

    #[test]
    fn the_dc_host_group_wins_over_the_star_group() {
        let txt = b"User-agent: *\nDisallow: /\n\nUser-agent: dc-host\nDisallow: /private/\nCrawl-delay: 2\n";
        let (rules, ttl) = Rules::from_answer(Some(200), txt, ROBOTS, TTL);
        assert_eq!(ttl, TTL);
        assert_eq!(rules.refusal("http://h.test/public/a.html", ROBOTS), None);
        assert_eq!(
            rules.refusal("http://h.test/private/a.html", ROBOTS).as_deref(),
            Some("disallowed by http://h.test/robots.txt for user-agent dc-host")
        );
        assert_eq!(rules.crawl_delay(), Some(Duration::from_secs(2)));
    }

    #[test]
    fn no_file_allows_everything_and_a_server_error_disallows_for_a_while() {
        let (rules, ttl) = Rules::from_answer(Some(404), b"", ROBOTS, TTL);
        assert!(rules.refusal("http://h.test/x", ROBOTS).is_none());
        assert_eq!(ttl, TTL);
        let (rules, ttl) = Rules::from_answer(Some(503), b"", ROBOTS, TTL);
        let why = rules.refusal("http://h.test/x", ROBOTS).expect("disallowed");
        assert!(why.contains("answered 503") && why.contains("RFC 9309"), "{why}");
        assert_eq!(ttl, ERROR_TTL);
        let (rules, ttl) = Rules::from_answer(None, b"", ROBOTS, TTL);
        assert!(rules.refusal("http://h.test/x", ROBOTS).is_none(), "unreachable: the request says why itself");
        assert_eq!(ttl, ERROR_TTL);
    }

    #[test]
    fn a_file_that_disallows_nothing_and_asks_no_delay_allows_all() {
        let allow_all = |txt: &[u8]| matches!(Rules::from_answer(Some(200), txt, ROBOTS, TTL).0, Rules::AllowAll);
        assert!(allow_all(b"User-agent: *\nAllow: /\n"), "the fixture site's file");
        assert!(allow_all(b"User-agent: *\nDisallow:\n# Disallow: /x\n"), "an empty Disallow allows all");
        assert!(allow_all(b"Sitemap: http://h.test/s.xml\n"));
        assert!(!allow_all(b"User-agent: other\nDisallow: /\n"), "any group's rule: looked up per URL");
        assert!(!allow_all(b"User-agent: *\ndisalow /a\n"), "a misspelling texting_robots accepts");
        assert!(!allow_all(b"User-agent: *\nAllow: /\nCrawl-delay: 1\n"), "a crawl-delay is kept");
    }

    #[test]
    fn robots_urls_are_per_origin() {
        let u = |s: &str| reqwest::Url::parse(s).expect("url");
        assert_eq!(robots_url(&u("http://h.test:8080/a/b?c")).as_deref(), Some("http://h.test:8080/robots.txt"));
        assert_eq!(robots_url(&u("https://user:pw@h.test/")).as_deref(), Some("https://h.test/robots.txt"));
        assert_eq!(robots_url(&u("ftp://h.test/file")), None);
    }
}
