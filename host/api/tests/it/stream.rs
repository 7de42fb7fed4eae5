//! The live event streams (SSE) of runs and apps: who may open them (bearer
//! token or a one-use stream ticket), what they send (state, backlog, live
//! records with the level filter, resume after `Last-Event-ID`), one hub per
//! topic however many clients, a slow client told what it lost, the end of a
//! run's stream, and open streams ending at server shutdown. SQLite and
//! PostgreSQL.

use std::time::Duration;

use chrono::Utc;
use dc_core::enums::RunStatus;
use dc_core::logs::{self, LogRow};
use dc_core::{Database, runs};
use serde_json::{Value, json};

use crate::common::*;

/// Bound on each wait for the next event (the hub polls every 250 ms).
const EVENT_LIMIT: Duration = Duration::from_secs(20);

/// An open event stream, read event by event.
struct Sse {
    resp: reqwest::Response,
    buf: String,
}

/// One event: name, id, data.
#[derive(Debug)]
struct Ev {
    name: String,
    id: Option<String>,
    data: Value,
}

impl Sse {
    async fn open(api: &TestApi, path: &str, bearer: Option<&str>, headers: &[(&str, &str)]) -> Sse {
        let mut req = api.client.get(api.url(path));
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("GET events");
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        assert_eq!(resp.headers()["content-type"], "text/event-stream", "{path}");
        Sse { resp, buf: String::new() }
    }

    /// The next event; None when the server closed the stream.
    async fn next(&mut self) -> Option<Ev> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut name, mut id, mut data) = ("message".to_string(), None, String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("id:") {
                        id = Some(v.trim().to_string());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue; // a keep-alive comment
                }
                let data = serde_json::from_str(&data).unwrap_or_else(|e| panic!("event data is JSON ({e}): {data}"));
                return Some(Ev { name, id, data });
            }
            let chunk = tokio::time::timeout(EVENT_LIMIT, self.resp.chunk())
                .await
                .unwrap_or_else(|_| panic!("no event within {EVENT_LIMIT:?}; buffered: {:?}", self.buf))
                .expect("read the stream");
            match chunk {
                Some(bytes) => self.buf.push_str(std::str::from_utf8(&bytes).expect("UTF-8")),
                None => return None,
            }
        }
    }

    /// The next event named `name`, failing on an `end` before it.
    async fn next_named(&mut self, name: &str) -> Ev {
        loop {
            let e = self.next().await.unwrap_or_else(|| panic!("the stream closed before a {name} event"));
            if e.name == name {
                return e;
            }
            assert_ne!(e.name, "end", "the stream ended before a {name} event: {e:?}");
        }
    }

    /// The next `state` event whose status is `status`.
    async fn state(&mut self, key: &str, status: &str) -> Value {
        loop {
            let e = self.next_named("state").await;
            if e.data[key] == status {
                return e.data;
            }
        }
    }
}

async fn log(db: &Database, app_id: &str, run: Option<&str>, level: &str, message: &str) -> i64 {
    let row = LogRow {
        ts: Utc::now(),
        level: level.into(),
        target: "plugin".into(),
        message: message.into(),
        app_id: Some(app_id.into()),
        runtime_id: run.map(Into::into),
        context: sqlx::types::Json(json!({"n": message})),
    };
    logs::insert_batch(db, &[row]).await.expect("insert log");
    logs::last_id(db).await.expect("last id").expect("a record")
}

#[tokio::test]
async fn streams_need_a_viewer_token_or_a_stream_ticket_which_works_once() {
    let api = TestApi::sqlite().await;
    let app_id = app(&api.db, "auth").await;
    let run = run(&api.db, &app_id).await;
    let events = format!("/api/v1/runs/{run}/events");

    // nothing, a refused token, an unknown ticket: 401
    assert_eq!(error_code(&api.get(&events, None).await.1), "unauthorized");
    assert_eq!(api.get(&events, Some("forged")).await.0, 401);
    let (s, body) = api.get(&format!("{events}?ticket=made-up"), None).await;
    assert_eq!(s, 401, "{body}");
    assert!(body["error"]["message"].as_str().expect("message").contains("ticket"), "{body}");

    // tickets come for a token only
    assert_eq!(api.send(reqwest::Method::POST, "/api/v1/stream-tickets", None, &json!({})).await.0, 401);
    let (s, t) = api.send(reqwest::Method::POST, "/api/v1/stream-tickets", Some(VIEWER), &json!({})).await;
    assert_eq!(s, 201, "{t}");
    assert_eq!(t["expires_in"], 30);
    let ticket = t["ticket"].as_str().expect("a ticket").to_string();
    assert!(ticket.len() >= 43, "256 random bits: {ticket}");

    // a ticket is not a bearer token, and opens no other route
    assert_eq!(api.get("/api/v1/apps", Some(&ticket)).await.0, 401);
    assert_eq!(api.get(&format!("/api/v1/apps?ticket={ticket}"), None).await.0, 401);
    // it opens one stream, once
    let mut sse = Sse::open(&api, &format!("{events}?ticket={ticket}&level=info"), None, &[]).await;
    assert_eq!(sse.next_named("state").await.data["runtime_id"], run.as_str());
    let (s, body) = api.get(&format!("{events}?ticket={ticket}"), None).await;
    assert_eq!((s, error_code(&body).as_str()), (401, "unauthorized"), "a used ticket: {body}");
    drop(sse);

    // every role reads; bad filters and unknown runs are refused
    for token in [VIEWER, OPERATOR, ADMIN] {
        let mut sse = Sse::open(&api, &events, Some(token), &[]).await;
        assert_eq!(sse.next_named("state").await.data["status"], "PENDING");
    }
    let (s, body) = api.get(&format!("{events}?level=loud"), Some(VIEWER)).await;
    assert_eq!(s, 422, "{body}");
    let (s, body) = api.get(&format!("{events}?since=1"), Some(VIEWER)).await;
    assert_eq!(s, 422, "unknown parameter: {body}");
    let (s, _) = api.get("/api/v1/runs/ffffffffffff/events", Some(VIEWER)).await;
    assert_eq!(s, 404);
    let r =
        api.client.get(api.url(&events)).bearer_auth(VIEWER).header("last-event-id", "x").send().await.expect("GET");
    assert_eq!(r.status().as_u16(), 422);

    // who the token stands for
    assert_eq!(api.get("/api/v1/me", Some(OPERATOR)).await, (200, json!({"subject": "otto", "role": "operator"})));
    assert_eq!(api.get("/api/v1/me", None).await.0, 401);
    api.stop().await;
}

async fn run_stream_follows_a_run_to_its_end(api: TestApi) {
    let db = &api.db;
    let app_id = app(db, "follow").await;
    let run = run(db, &app_id).await;
    let debug = log(db, &app_id, Some(&run), "DEBUG", "before, debug").await;
    let first = log(db, &app_id, Some(&run), "INFO", "before, info").await;
    log(db, &app_id, None, "ERROR", "another run's record").await;
    assert!(debug < first);

    let events = format!("/api/v1/runs/{run}/events?level=info");
    let mut a = Sse::open(&api, &events, Some(VIEWER), &[]).await;
    let mut b = Sse::open(&api, &events, Some(VIEWER), &[]).await;
    // the state first, then the backlog at the level asked for
    assert_eq!(a.next().await.map(|e| e.name), Some("state".into()));
    let e = a.next_named("log").await;
    assert_eq!((e.id.as_deref(), e.data["message"].as_str()), (Some(first.to_string().as_str()), Some("before, info")));
    assert_eq!(b.next_named("log").await.data["id"], first);
    assert_eq!(api.state.stream_hubs(), 1, "two clients of one run share one hub");

    // live: progress, a record, the end
    runs::mark_started(db, &run, 4242).await.expect("start");
    runs::set_progress(db, &run, 3, 10, 1).await.expect("progress");
    let s = a.state("status", "RUNNING").await;
    assert_eq!(s["worker_pid"], 4242);
    log(db, &app_id, Some(&run), "DEBUG", "live, debug").await;
    let live = log(db, &app_id, Some(&run), "WARN", "live, warn").await;
    let e = a.next_named("log").await;
    assert_eq!(
        (e.data["id"].as_i64(), e.data["level"].as_str()),
        (Some(live), Some("WARN")),
        "the debug one is filtered"
    );
    runs::set_progress(db, &run, 10, 10, 1).await.expect("progress");
    runs::finish(db, &run, RunStatus::Success, None).await.expect("finish");
    let s = a.state("status", "SUCCESS").await;
    assert_eq!(s["items"], json!({"current": 10, "total": 10, "errors": 1}));
    let end = a.next_named("end").await;
    assert_eq!(end.data["status"], "SUCCESS", "{end:?}");
    assert!(a.next().await.is_none(), "the stream closes after end");
    assert_eq!(b.next_named("end").await.data["status"], "SUCCESS");

    // a reconnecting client resumes after the last id it got (Last-Event-ID)
    let mut c =
        Sse::open(&api, &format!("/api/v1/runs/{run}/events"), Some(VIEWER), &[("last-event-id", &first.to_string())])
            .await;
    let mut ids = Vec::new();
    while let Some(e) = c.next().await {
        if e.name == "log" {
            ids.push(e.data["id"].as_i64().expect("id"));
        }
    }
    assert_eq!(ids.len(), 2, "the two records after {first}: {ids:?}");
    assert!(ids.iter().all(|id| *id > first && *id <= live), "{ids:?}");
    api.stop().await;
}

#[tokio::test]
async fn a_run_stream_sends_state_backlog_and_live_records_until_the_run_ends_sqlite() {
    run_stream_follows_a_run_to_its_end(TestApi::sqlite().await).await;
}

#[tokio::test]
async fn a_run_stream_sends_state_backlog_and_live_records_until_the_run_ends_postgres() {
    run_stream_follows_a_run_to_its_end(TestApi::postgres().await).await;
}

#[tokio::test]
async fn a_slow_client_is_told_how_many_records_it_lost_and_the_hub_goes_on() {
    let api = TestApi::sqlite().await;
    let db = &api.db;
    let app_id = app(db, "flood").await;
    let run = run(db, &app_id).await;
    let mut slow = Sse::open(&api, &format!("/api/v1/runs/{run}/events"), Some(VIEWER), &[]).await;
    assert_eq!(slow.next_named("state").await.data["status"], "PENDING");
    // more records than a hub keeps for a client, written at once: the hub
    // sends them in pages without waiting for anyone
    const N: usize = 1_200;
    let rows: Vec<LogRow> = (0..N)
        .map(|i| LogRow {
            ts: Utc::now(),
            level: "INFO".into(),
            target: "plugin".into(),
            message: format!("record {i}"),
            app_id: Some(app_id.clone()),
            runtime_id: Some(run.clone()),
            context: sqlx::types::Json(json!({})),
        })
        .collect();
    logs::insert_batch(db, &rows).await.expect("insert");
    runs::finish(db, &run, RunStatus::Failed, Some("flooded")).await.expect("finish");
    let (mut got, mut skipped, mut lagged) = (0usize, 0u64, 0);
    let mut last = 0;
    loop {
        let e = slow.next().await.expect("events until end");
        match e.name.as_str() {
            "log" => {
                let id = e.data["id"].as_i64().expect("id");
                assert!(id > last, "records arrive in order, once");
                last = id;
                got += 1;
            }
            "lagged" => {
                lagged += 1;
                skipped += e.data["skipped"].as_u64().expect("skipped");
            }
            "end" => break,
            _ => {}
        }
    }
    assert!(lagged > 0 && skipped > 0, "the client was told it lagged");
    assert_eq!(got + skipped as usize, N, "every record was either sent or counted as skipped");
    api.stop().await;
}

#[tokio::test]
async fn an_app_stream_goes_live_from_now_and_shutdown_ends_open_streams() {
    let api = TestApi::sqlite().await;
    let db = api.db.clone();
    let app_id = app(&db, "live").await;
    log(&db, &app_id, None, "INFO", "old news").await;
    let mut sse = Sse::open(&api, &format!("/api/v1/apps/{app_id}/events"), Some(VIEWER), &[]).await;
    let s = sse.next_named("state").await;
    assert_eq!((s.data["app_id"].as_str(), s.data["path"].as_str()), (Some(app_id.as_str()), Some("it/tests/live")));
    let run = run(&db, &app_id).await;
    let id = log(&db, &app_id, Some(&run), "INFO", "fresh").await;
    let e = sse.next_named("log").await;
    assert_eq!((e.data["id"].as_i64(), e.data["message"].as_str()), (Some(id), Some("fresh")), "not the old record");
    assert_eq!(e.data["runtime_id"], run.as_str());

    // the server stops: the open stream ends (and the graceful shutdown does not wait for it)
    let reader = tokio::spawn(async move {
        loop {
            match sse.next().await {
                Some(e) if e.name == "end" => return e.data,
                Some(_) => {}
                None => panic!("the stream closed without an end event"),
            }
        }
    });
    api.stop().await;
    let end = reader.await.expect("reader");
    assert!(end["reason"].as_str().expect("reason").contains("shutting down"), "{end}");
}
