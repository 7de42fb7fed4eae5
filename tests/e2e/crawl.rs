//! The crawl frontier (plugin interface 1.2): the example crawler starts from
//! the fixture site's home page only and reaches every page by following
//! links that `collect` enqueues — each once, on several threads.

use dc_e2e::{FixtureSite, Host, both_backends, plugin_lib};

/// The start page `/`, `/index.html` (the same document under another URL,
/// which the listing pages link to), 15 listing pages and 300 product pages.
const PAGES: i64 = 317;

fn crawls_the_site_through_the_frontier(new_host: fn() -> Host) {
    let host = new_host();
    let site = FixtureSite::start();
    host.install(&plugin_lib("dc_plugin_crawl"), "crawl.so");
    let out = host.ok(&["reload"]);
    assert!(out.contains("registered demo/fixtures/crawl 1.0.0"), "{out}");
    let args = serde_json::json!({"start_url": site.base_url}).to_string();

    let first = host.json(&["run", "demo/fixtures/crawl", "--args", &args, "--json"]);
    assert_eq!(first["status"], "SUCCESS", "{first}");
    // one start page; everything else came through enqueue
    assert_eq!(first["total_count"], PAGES, "{first}");
    assert_eq!(first["current_count"], PAGES, "{first}");
    assert_eq!(first["inserted"], PAGES, "every page is collected exactly once: {first}");
    assert_eq!(first["error_count"], 0, "{first}");

    let rows = host.json(&["data", "head", "crawl_pages", "--limit", "1000", "--json"]);
    let rows = rows.as_array().expect("rows");
    assert_eq!(rows.len() as i64, PAGES);
    let home = rows.iter().find(|r| r["path"] == "/").expect("the start page is a row");
    assert_eq!(home["title"], "Fixture Catalogue");
    assert!(rows.iter().any(|r| r["path"] == "/catalogue/item-0300.html"), "the last product page was reached");

    // the dropped duplicates are logged with their count
    let rid = first["runtime_id"].as_str().expect("id");
    let shown = host.json(&["runs", "show", rid, "--logs", "--json"]);
    let logs = shown["logs"].as_array().expect("logs");
    assert!(
        logs.iter().any(|l| l["message"] == "the crawl frontier dropped enqueued items"
            && l["context"]["duplicates"].as_u64().is_some_and(|d| d > 0)),
        "{logs:?}"
    );

    // the same site again: nothing changes
    let second = host.json(&["run", "demo/fixtures/crawl", "--args", &args, "--json"]);
    assert_eq!(second["status"], "SUCCESS", "{second}");
    assert_eq!((second["inserted"].as_i64(), second["unchanged"].as_i64()), (Some(0), Some(PAGES)), "{second}");
}

both_backends!(crawls_the_site_through_the_frontier);
