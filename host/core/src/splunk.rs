//! Logging into Splunk: a `tracing` layer and writer thread (the database
//! sink's, from `crate::logs`) that post batches to the Splunk HTTP Event
//! Collector (`POST {url}`, `Authorization: Splunk {token}`, a body of
//! concatenated HEC event objects). When Splunk refuses a batch (non-2xx, or a
//! reply without `"code": 0`) or cannot be reached within 5 s, the batch is
//! appended to the same fallback JSONL file as the database sink's and one line
//! on stderr says how many records went there and why. The caller never waits:
//! the buffer is bounded and overflow is dropped and counted.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::logs::{LogRow, LogSink, SinkLayer, in_crate, start_sink};

/// How long one batch may take to post (connect, send, answer).
pub const HEC_TIMEOUT: Duration = Duration::from_secs(5);

/// The `tracing` layer feeding the Splunk sink.
pub type HecLayer = SinkLayer;

/// Control of the Splunk sink's writer thread (`flush`, `dropped`).
pub type HecSink = LogSink;

/// Why a batch did not reach Splunk.
#[derive(Debug, thiserror::Error)]
pub enum HecError {
    /// The HTTP client could not be set up.
    #[error("cannot set up the http client for splunk ({0})")]
    Client(String),
    /// No answer: connection refused, DNS, TLS, timeout.
    #[error(
        "cannot reach splunk at {url} ({why}); check logging.splunk_url and that the HTTP event collector is enabled"
    )]
    Unreachable {
        /// The HEC endpoint.
        url: String,
        /// The transport error.
        why: String,
    },
    /// Splunk answered, but did not accept the events.
    #[error("splunk answered HTTP {status}: {text}{}; {hint}", code.map(|c| format!(" (code {c})")).unwrap_or_default())]
    Refused {
        /// HTTP status.
        status: u16,
        /// HEC's `text`, or the start of the body.
        text: String,
        /// HEC's `code`, if the body had one.
        code: Option<i64>,
        /// What to check.
        hint: &'static str,
    },
}

/// Starts the Splunk sink: a layer feeding a buffer of `capacity` records and
/// a writer thread posting batches to the HEC endpoint `url` with `token`,
/// stamping each event with `host`. `rt` runs the HTTP requests; failed
/// batches go to `fallback`.
pub fn start_hec_sink(
    url: &str,
    token: &str,
    host: &str,
    rt: tokio::runtime::Handle,
    capacity: usize,
    fallback: PathBuf,
) -> (HecLayer, HecSink) {
    start_with_timeout(url, token, host, rt, capacity, fallback, HEC_TIMEOUT)
}

fn start_with_timeout(
    url: &str,
    token: &str,
    host: &str,
    rt: tokio::runtime::Handle,
    capacity: usize,
    fallback: PathBuf,
    timeout: Duration,
) -> (HecLayer, HecSink) {
    let (url, token, host) = (url.to_string(), token.to_string(), host.to_string());
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("dc-host/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| HecError::Client(error_chain(&e)));
    start_sink("splunk log sink", capacity, fallback, is_http_stack, move |rows| {
        let client = client.as_ref().map_err(|e| e.to_string())?;
        rt.block_on(post_batch(client, &url, &token, &host, rows)).map_err(|e| e.to_string())
    })
}

/// The crates that carry the sink's own requests: their events must not be
/// posted, or every post would log more to post.
fn is_http_stack(target: &str) -> bool {
    ["reqwest", "hyper", "hyper_util", "hyper_rustls", "h2", "rustls", "tokio_rustls", "want"]
        .iter()
        .any(|krate| in_crate(target, krate))
}

/// One record as a HEC event object.
pub fn hec_event(row: &LogRow, host: &str) -> Value {
    json!({
        "time": row.ts.timestamp_millis() as f64 / 1000.0,
        "host": host,
        "source": "dc-host",
        "sourcetype": "_json",
        "event": {
            "level": row.level,
            "target": row.target,
            "message": row.message,
            "app_id": row.app_id,
            "runtime_id": row.runtime_id,
            "context": row.context.0,
        },
    })
}

/// Posts records to the HEC endpoint `url` in one request; succeeds only on
/// HEC's success reply (2xx with `"code": 0`).
pub async fn post_batch(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    host: &str,
    rows: &[LogRow],
) -> Result<(), HecError> {
    let body = rows.iter().map(|r| hec_event(r, host).to_string()).collect::<Vec<_>>().join("\n");
    let unreachable = |e: reqwest::Error| {
        // the url is in the message already
        let why =
            if e.is_timeout() { "timed out waiting for an answer".to_string() } else { error_chain(&e.without_url()) };
        HecError::Unreachable { url: crate::settings::redact_url(url), why }
    };
    let response = client
        .post(url)
        .header("Authorization", format!("Splunk {token}"))
        .header("Content-Type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(unreachable)?;
    let status = response.status();
    let text = response.text().await.map_err(unreachable)?;
    let reply = serde_json::from_str::<Value>(&text).ok();
    let code = reply.as_ref().and_then(|v| v["code"].as_i64());
    if status.is_success() && code == Some(0) {
        return Ok(());
    }
    let text = match reply.as_ref().and_then(|v| v["text"].as_str()) {
        Some(t) => t.to_string(),
        None if text.trim().is_empty() => "empty body".to_string(),
        None => text.chars().take(200).collect(),
    };
    let hint = match status.as_u16() {
        _ if status.is_success() && code.is_some() => "check the HEC settings in splunk",
        _ if status.is_success() => "no HEC success reply; check that logging.splunk_url is the HEC event endpoint",
        401 | 403 => "check logging.splunk_token",
        404 => "check logging.splunk_url (the HEC event endpoint is /services/collector/event)",
        400 => "check the token's allowed indexes and the HEC settings in splunk",
        _ => "check the splunk HTTP event collector",
    };
    Err(HecError::Refused { status: status.as_u16(), text, code, hint })
}

/// An error and its causes, `outer: inner: ...` (reqwest hides the cause, e.g.
/// "connection refused", in its source chain).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text = format!("{text}: {part}");
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use axum::Router;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;
    use serde_json::{Value, json};
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    const TOKEN: &str = "test-token";
    const SUCCESS: &str = r#"{"text":"Success","code":0}"#;

    /// An imitation of Splunk's HTTP Event Collector.
    #[derive(Clone)]
    struct Hec {
        status: StatusCode,
        reply: &'static str,
        /// Events accepted (only when answering success).
        events: Arc<Mutex<Vec<Value>>>,
        /// Authorization headers seen, one per request.
        auth: Arc<Mutex<Vec<String>>>,
    }

    impl Hec {
        fn events(&self) -> Vec<Value> {
            self.events.lock().expect("events lock").clone()
        }
        fn auth(&self) -> Vec<String> {
            self.auth.lock().expect("auth lock").clone()
        }
    }

    async fn collect(State(hec): State<Hec>, headers: HeaderMap, body: String) -> (StatusCode, String) {
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        hec.auth.lock().expect("auth lock").push(auth.clone());
        if auth != format!("Splunk {TOKEN}") {
            return (StatusCode::UNAUTHORIZED, r#"{"text":"Token is required","code":2}"#.into());
        }
        // HEC's body is a stream of JSON objects, not an array
        let mut events = Vec::new();
        for v in serde_json::Deserializer::from_str(&body).into_iter::<Value>() {
            match v {
                Ok(v @ Value::Object(_)) => events.push(v),
                _ => return (StatusCode::BAD_REQUEST, r#"{"text":"Invalid data format","code":6}"#.into()),
            }
        }
        if hec.status == StatusCode::OK && hec.reply == SUCCESS {
            hec.events.lock().expect("events lock").extend(events);
        }
        (hec.status, hec.reply.into())
    }

    /// Serves an imitation HEC on loopback; returns its endpoint URL.
    async fn serve(status: StatusCode, reply: &'static str) -> (String, Hec) {
        let hec = Hec { status, reply, events: Arc::default(), auth: Arc::default() };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = Router::new().route("/services/collector/event", post(collect)).with_state(hec.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}/services/collector/event"), hec)
    }

    /// A port nothing listens on.
    async fn closed_port_url() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        format!("http://{addr}/services/collector/event")
    }

    /// A server that accepts connections and never answers.
    async fn silent_url() -> String {
        silent_server().await.0
    }

    /// A server that accepts connections and never answers; each accepted
    /// connection is announced on the receiver.
    async fn silent_server() -> (String, std::sync::mpsc::Receiver<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = std::sync::mpsc::channel();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                held.push(conn);
                let _ = tx.send(());
            }
        });
        (format!("http://{addr}/services/collector/event"), rx)
    }

    /// Flushes from a blocking thread (the writer needs the runtime meanwhile).
    async fn flush(sink: &HecSink) {
        let sink = sink.clone();
        tokio::task::spawn_blocking(move || sink.flush()).await.expect("flush");
    }

    /// Two records inside a run, plus one from the HTTP stack that must be skipped.
    fn emit() {
        let span = tracing::info_span!("run", app_id = "app-1", runtime_id = "run-1");
        let _g = span.enter();
        tracing::info!(page = 3, url = "https://example.test/p3", ok = true, "fetched page");
        // the sink's own requests must never feed back into it
        tracing::debug!(target: "hyper_util::client::legacy::pool", "reuse idle connection");
        tracing::debug!(target: "reqwest", "response 200");
        let inner = tracing::debug_span!("item", sku = "inner");
        let _i = inner.enter();
        tracing::error!(context_json = r#"{"sku":"a-1","attempt":2}"#, "plugin said");
    }

    fn read_jsonl(path: &Path) -> Vec<Value> {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("fallback file {}: {e}", path.display()));
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("fallback line is not JSON ({e}): {l}")))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_reach_hec_with_run_ids_and_context() {
        let (url, hec) = serve(StatusCode::OK, SUCCESS).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let fallback = dir.path().join("fallback.jsonl");
        let (layer, sink) =
            start_hec_sink(&url, TOKEN, "test-host", tokio::runtime::Handle::current(), 100, fallback.clone());
        let before = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), emit);
        // outside the subscriber: not captured
        tracing::info!("not captured");
        flush(&sink).await;
        let after = chrono::Utc::now().timestamp_millis() as f64 / 1000.0;

        let events = hec.events();
        assert_eq!(events.len(), 2, "{events:#?}");
        let expected = [
            ("INFO", "fetched page", json!({"page": 3, "url": "https://example.test/p3", "ok": true})),
            ("ERROR", "plugin said", json!({"sku": "a-1", "attempt": 2})),
        ];
        for (e, (level, message, context)) in events.iter().zip(expected) {
            let time = e["time"].as_f64().unwrap_or_else(|| panic!("time is epoch seconds: {e}"));
            assert!(time >= before - 0.001 && time <= after + 0.001, "{time} not in [{before}, {after}]: {e}");
            assert_eq!(
                (&e["host"], &e["source"], &e["sourcetype"]),
                (&json!("test-host"), &json!("dc-host"), &json!("_json")),
                "{e}"
            );
            assert_eq!(
                e["event"],
                json!({
                    "level": level,
                    "target": module_path!(),
                    "message": message,
                    "app_id": "app-1",
                    "runtime_id": "run-1",
                    "context": context,
                }),
                "{e}"
            );
        }
        let auth = hec.auth();
        assert!(!auth.is_empty() && auth.iter().all(|a| a == "Splunk test-token"), "{auth:?}");
        assert_eq!(sink.dropped(), 0);
        assert!(!fallback.exists(), "nothing may go to the fallback file while splunk accepts");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_sinks_on_one_subscriber_share_the_run_span() {
        // as in `dc-host`: the database layer and the splunk layer both record
        // the run ids on the same span
        let (url, hec) = serve(StatusCode::OK, SUCCESS).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let rt = tokio::runtime::Handle::current();
        let (a, sink_a) = start_hec_sink(&url, TOKEN, "a", rt.clone(), 100, dir.path().join("a.jsonl"));
        let (b, sink_b) = start_hec_sink(&url, TOKEN, "b", rt, 100, dir.path().join("b.jsonl"));
        tracing::subscriber::with_default(tracing_subscriber::registry().with(a).with(b), emit);
        flush(&sink_a).await;
        flush(&sink_b).await;
        let events = hec.events();
        assert_eq!(events.len(), 4, "{events:#?}");
        for host in ["a", "b"] {
            let ours: Vec<_> = events.iter().filter(|e| e["host"] == json!(host)).collect();
            assert_eq!(ours.len(), 2, "{events:#?}");
            assert!(ours.iter().all(|e| e["event"]["runtime_id"] == json!("run-1")), "{ours:#?}");
        }
    }

    /// Emits through a sink at `url`, flushes, and checks both records landed
    /// in the fallback file (database-sink format).
    async fn assert_falls_back(url: &str, timeout: Duration) {
        let dir = tempfile::tempdir().expect("tempdir");
        // the directory does not exist yet: the sink creates it
        let fallback = dir.path().join("logs").join("fallback.jsonl");
        let rt = tokio::runtime::Handle::current();
        let (layer, sink) = start_with_timeout(url, TOKEN, "test-host", rt, 100, fallback.clone(), timeout);
        let started = Instant::now();
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), emit);
        assert!(started.elapsed() < Duration::from_millis(200), "logging waited for splunk: {:?}", started.elapsed());
        flush(&sink).await;
        let records = read_jsonl(&fallback);
        let got: Vec<_> = records
            .iter()
            .map(|r| {
                (
                    r["level"].clone(),
                    r["message"].clone(),
                    r["app_id"].clone(),
                    r["runtime_id"].clone(),
                    r["context"].clone(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    json!("INFO"),
                    json!("fetched page"),
                    json!("app-1"),
                    json!("run-1"),
                    json!({"page": 3, "url": "https://example.test/p3", "ok": true})
                ),
                (
                    json!("ERROR"),
                    json!("plugin said"),
                    json!("app-1"),
                    json!("run-1"),
                    json!({"sku": "a-1", "attempt": 2})
                ),
            ],
            "{records:#?}"
        );
        assert_eq!(sink.dropped(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_batches_go_to_the_fallback_file() {
        let (url, hec) = serve(StatusCode::FORBIDDEN, r#"{"text":"Invalid token","code":4}"#).await;
        assert_falls_back(&url, HEC_TIMEOUT).await;
        assert!(!hec.auth().is_empty(), "the sink never reached the server");
        assert!(hec.events().is_empty());

        // 2xx is not enough: HEC's reply must say code 0
        let (url, _) = serve(StatusCode::OK, r#"{"text":"Data channel is missing","code":10}"#).await;
        assert_falls_back(&url, HEC_TIMEOUT).await;
        // e.g. the splunk web UI instead of the collector
        let (url, _) = serve(StatusCode::OK, "<html>Splunk</html>").await;
        assert_falls_back(&url, HEC_TIMEOUT).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unreachable_or_silent_splunk_goes_to_the_fallback_file() {
        assert_falls_back(&closed_port_url().await, HEC_TIMEOUT).await;
        let started = Instant::now();
        assert_falls_back(&silent_url().await, Duration::from_millis(300)).await;
        assert!(started.elapsed() < Duration::from_secs(4), "the timeout was not applied: {:?}", started.elapsed());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn errors_name_the_cause_and_the_setting_to_check() {
        let client = reqwest::Client::builder().timeout(Duration::from_millis(300)).build().expect("client");
        let row = LogRow {
            ts: chrono::Utc::now(),
            level: "INFO".into(),
            target: "t".into(),
            message: "m".into(),
            app_id: None,
            runtime_id: None,
            context: sqlx::types::Json(json!({})),
        };
        let rows = [row];
        let (url, _) = serve(StatusCode::FORBIDDEN, r#"{"text":"Invalid token","code":4}"#).await;
        let e = post_batch(&client, &url, TOKEN, "h", &rows).await.expect_err("403").to_string();
        assert_eq!(e, "splunk answered HTTP 403: Invalid token (code 4); check logging.splunk_token");
        let e = post_batch(&client, &url, "wrong", "h", &rows).await.expect_err("401").to_string();
        assert!(e.contains("HTTP 401") && e.contains("logging.splunk_token"), "{e}");
        let (url, _) = serve(StatusCode::OK, "<html>Splunk</html>").await;
        let e = post_batch(&client, &url, TOKEN, "h", &rows).await.expect_err("not hec").to_string();
        assert!(e.contains("<html>Splunk</html>") && e.contains("HEC event endpoint"), "{e}");
        let e = post_batch(&client, &closed_port_url().await, TOKEN, "h", &rows).await.expect_err("closed").to_string();
        assert!(e.starts_with("cannot reach splunk at http://127.0.0.1:") && e.contains("logging.splunk_url"), "{e}");
        assert!(e.to_lowercase().contains("refused"), "the cause is hidden: {e}");
        let e = post_batch(&client, &silent_url().await, TOKEN, "h", &rows).await.expect_err("silent").to_string();
        assert!(e.contains("timed out"), "{e}");
        let (url, _) = serve(StatusCode::OK, SUCCESS).await;
        post_batch(&client, &url, TOKEN, "h", &rows).await.expect("success reply");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stuck_splunk_never_blocks_the_caller() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fallback = dir.path().join("fallback.jsonl");
        let rt = tokio::runtime::Handle::current();
        let (url, accepted) = silent_server().await;
        let (layer, sink) = start_with_timeout(&url, TOKEN, "h", rt, 2, fallback.clone(), Duration::from_secs(1));
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            tracing::info!("first");
            // the writer now waits on the silent server with this one record
            accepted.recv_timeout(Duration::from_secs(60)).expect("the writer never connected");
            for i in 0..1000 {
                tracing::info!(i, "flood");
            }
        });
        // a caller that waited for room would have lost nothing
        assert!(sink.dropped() >= 990, "only {} of the flood was dropped with a buffer of 2", sink.dropped());
        flush(&sink).await;
        let kept = read_jsonl(&fallback).len() as u64;
        assert_eq!(kept + sink.dropped(), 1001, "records went missing uncounted");
    }
}
