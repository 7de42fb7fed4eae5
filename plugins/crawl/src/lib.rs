//! Example dc-host plugin: crawls a site without listing it first. The work
//! list is only the start page; `collect` stores one row per page (title,
//! links, size) and enqueues every link on the same site through the host's
//! crawl frontier (`Context::enqueue_all`, plugin interface 1.2). The host
//! collects each page once however many pages link to it (links are
//! deduplicated by canonical URL), stops following at the manifest's depth and
//! item limits, retries 429/5xx answers and runs `collect` on several threads
//! (`runs.threads`).
//!
//! Compare `plugins/catalogue`, which reads the listing pages in
//! `prepare_list` before collecting anything.

use dc_plugin_sdk::html::{Document, join_url};
use dc_plugin_sdk::{
    ColumnDecl, Context, Error, LogLevel, Manifest, Record, Result, Scraper, TableDecl, Value, capability, json,
};
use serde::Deserialize;

/// The table this plugin writes.
pub const TABLE: &str = "crawl_pages";

/// How deep the crawl follows links from the start page (depth 0).
pub const MAX_DEPTH: u32 = 20;
/// The most pages one run collects.
pub const MAX_PAGES: u64 = 100_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Args {
    /// The start page; only links under the same scheme, host and port are followed.
    start_url: String,
}

/// The crawler for one run.
#[derive(Debug)]
pub struct Crawl {
    /// The start page, absolute.
    start: String,
    /// `scheme://host:port/` of the start page: links elsewhere are not followed.
    origin: String,
}

impl Scraper for Crawl {
    fn manifest() -> Manifest {
        Manifest::new("demo", "fixtures", "crawl", env!("CARGO_PKG_VERSION"))
            .description("Example crawler: follows the links of a site from its start page, one row per page")
            .requires(capability::FRONTIER)
            .crawl_limits(Some(MAX_DEPTH), Some(MAX_PAGES))
            .table(
                TableDecl::new(TABLE)
                    .column(ColumnDecl::text("path").not_null().max_len(2000))
                    .column(ColumnDecl::text("title").max_len(500))
                    .column(ColumnDecl::integer("links"))
                    .column(ColumnDecl::integer("bytes"))
                    .key(["path"]),
            )
            .args_schema(json!({
                "type": "object",
                "properties": {
                    "start_url": {
                        "type": "string",
                        "format": "uri",
                        "description": "The page the crawl starts at, e.g. http://localhost:8080/; links to other sites are not followed"
                    }
                },
                "required": ["start_url"],
                "additionalProperties": false
            }))
    }

    fn new(ctx: &Context) -> Result<Self> {
        let args: Args = ctx.args()?;
        let start = join_url(&args.start_url, "")?;
        let origin = join_url(&start, "/")?;
        Ok(Crawl { start, origin })
    }

    fn prepare_list(&mut self, _ctx: &Context) -> Result<Vec<Value>> {
        Ok(vec![Value::String(self.start.clone())])
    }

    fn collect(&self, ctx: &Context, item: &Value) -> Result<Vec<Record>> {
        let url = item.as_str().ok_or_else(|| Error::msg(format!("work item {item} is not a URL string")))?;
        let resp = ctx.get(url)?;
        let is_html = resp.header("content-type").is_none_or(|t| t.contains("html"));
        let (title, links) = if is_html { links_of(&resp.url, &resp.text(), &self.origin) } else { (None, vec![]) };
        let answer = ctx.enqueue_all(&links)?;
        if answer.over_depth + answer.over_limit > 0 {
            ctx.log(
                LogLevel::Debug,
                "links not followed (crawl limits)",
                json!({"page": url, "over_depth": answer.over_depth, "over_limit": answer.over_limit}),
            );
        }
        // the path, not the URL: the same site served on another port merges as unchanged
        let path = resp.url.strip_prefix(self.origin.as_str()).map_or(resp.url.as_str(), |p| p);
        Ok(vec![Record::new(
            TABLE,
            json!({"path": format!("/{path}"), "title": title, "links": links.len(), "bytes": resp.body.len()}),
        )])
    }
}

dc_plugin_sdk::export_plugin!(Crawl);

/// The title of an HTML page at `url` and the absolute URLs of its links that
/// stay under `origin` (fragments dropped, each once, in page order).
pub fn links_of(url: &str, html: &str, origin: &str) -> (Option<String>, Vec<String>) {
    let doc = Document::parse(html);
    let mut links: Vec<String> = Vec::new();
    for a in doc.select("a[href]").unwrap_or_default() {
        let Some(Ok(mut link)) = a.attr("href").map(|href| join_url(url, href)) else { continue };
        if let Some(i) = link.find('#') {
            link.truncate(i);
        }
        if link.starts_with(origin) && !links.contains(&link) {
            links.push(link);
        }
    }
    (doc.title(), links)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dc_plugin_sdk::Response;
    use dc_plugin_sdk::testing::TestHost;
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    /// A site where every page links back home and to its neighbours, so
    /// most links are duplicates, plus a link to another site.
    fn site() -> HashMap<String, String> {
        let mut pages = HashMap::new();
        let page = |n: usize| format!("http://site.test/p/{n}.html");
        pages.insert(
            "http://site.test/".to_string(),
            "<title>Home</title><a href='p/1.html'>one</a><a href='http://elsewhere.test/'>away</a>".to_string(),
        );
        for n in 1..=30usize {
            let prev = n.saturating_sub(1).max(1);
            pages.insert(
                page(n),
                format!(
                    "<title>Page {n}</title><a href='/'>home</a><a href='{next}.html#top'>next</a><a href='{prev}.html'>prev</a>",
                    next = n + 1
                ),
            );
        }
        pages
    }

    #[test]
    fn follows_each_link_once_within_the_depth_limit_and_the_site() {
        let pages = site();
        let fetched: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = fetched.clone();
        let host = TestHost::new(move |req| {
            log.lock().expect("lock").push(req.url.clone());
            match pages.get(&req.url) {
                Some(body) => Ok(Response::html_page(&req.url, body)),
                None => Ok(Response::new(404, &req.url, "not here")),
            }
        })
        .args(json!({"start_url": "http://site.test/"}));
        let run = host.run::<Crawl>().expect("runs");
        let fetched = fetched.lock().expect("lock").clone();
        let mut unique = fetched.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), fetched.len(), "no page is fetched twice: {fetched:?}");
        // home is depth 0, page n is depth n: pages 1..=20 are followed, 21 is not
        assert_eq!(fetched.len(), 1 + MAX_DEPTH as usize, "{fetched:?}");
        assert!(!fetched.iter().any(|u| u.contains("elsewhere")), "other sites are not followed");
        assert!(run.dropped.over_depth >= 1 && run.dropped.duplicates > 10, "{:?}", run.dropped);
        let rows = run.rows(TABLE);
        assert_eq!(rows.len(), fetched.len());
        assert!(rows.iter().any(|r| r["path"] == "/p/20.html" && r["title"] == "Page 20"), "{rows:?}");
        assert_eq!(run.collected.last().map(|(_, d)| *d), Some(MAX_DEPTH));
    }

    #[test]
    fn links_are_absolute_on_site_and_without_fragments() {
        let (title, links) = links_of(
            "http://h:8/a/b.html",
            "<title> T </title><a href='c.html#x'>c</a><a href='c.html'>c again</a><a href='//other/x'>o</a><a href='mailto:a@b'>m</a>",
            "http://h:8/",
        );
        assert_eq!(title.as_deref(), Some("T"));
        assert_eq!(links, vec!["http://h:8/a/c.html".to_string()]);
    }
}
