//! Plugin HTTP through the host: requests answered 429/502/503/504 (or that
//! time out or lose their connection) are retried with backoff, honouring
//! `Retry-After`, and a plugin sees how many attempts it took; a `Retry-After`
//! over the maximum is not waited for, and other statuses come back at once.
//! The servers are loopback sinks that answer as told.

use dc_e2e::{Host, HttpSink};
use serde_json::json;

use crate::storage::{rows, run, with_misbehave};

#[test]
fn plugin_requests_are_retried_honouring_retry_after() {
    let host = with_misbehave(Host::sqlite());
    // 503 twice with Retry-After: 0, then 200: the plugin sees 200 after 3 attempts
    let flaky = HttpSink::start_with(2, 503, Some("0"));
    let r = run(&host, json!({"mode": "fetch", "items": 1, "url": flaky.url}));
    assert_eq!(r["status"], "SUCCESS", "{r}");
    assert_eq!(rows(&host, "misbehave_rows")[0]["note"], "200 after 3 attempts");
    assert_eq!(flaky.requests.try_iter().count(), 3);
    // a status that is not retryable comes back at once
    let missing = HttpSink::start_with(5, 404, None);
    run(&host, json!({"mode": "fetch", "items": 1, "url": missing.url}));
    assert_eq!(rows(&host, "misbehave_rows")[0]["note"], "404 after 1 attempts");
    // a Retry-After longer than runs.http_retry_max_delay_secs is not waited for: the plugin gets the 429
    // (last: the host's politeness limiter then holds 127.0.0.1 back for every run, up to its max block)
    let slow = HttpSink::start_with(1, 429, Some("3600"));
    run(&host, json!({"mode": "fetch", "items": 1, "url": slow.url}));
    assert_eq!(rows(&host, "misbehave_rows")[0]["note"], "429 after 1 attempts");
    assert_eq!(slow.requests.try_iter().count(), 1);
}
