//! The harness: a real API server on a loopback port over a real, migrated
//! database (SQLite in a temp dir, or a scratch PostgreSQL database), with a
//! test double of the token authority (a fixed map token → principal), and
//! helpers that create apps and runs through dc-core.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use dc_api::ApiState;
use dc_core::access::{AuthFailure, Authenticate, Principal, Role};
use dc_core::{Database, Settings, apps, runs};
use dc_e2e::pg::PgScratch;
use dc_runtime::HostEnv;
use serde_json::Value;

/// The tokens the test authority accepts.
pub const VIEWER: &str = "viewer-token";
pub const OPERATOR: &str = "operator-token";
pub const ADMIN: &str = "admin-token";

/// The browser origin the test server allows (CORS).
pub const ALLOWED_ORIGIN: &str = "https://ops.example.com";

/// A fixed map token → principal: the test double of the token authority.
struct FixedTokens(HashMap<&'static str, Principal>);

impl Authenticate for FixedTokens {
    fn authenticate<'a>(
        &'a self,
        bearer: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Principal, AuthFailure>> + Send + 'a>> {
        Box::pin(async move { self.0.get(bearer).cloned().ok_or_else(|| AuthFailure("unknown token".into())) })
    }
}

fn tokens() -> FixedTokens {
    let p = |subject: &str, role| Principal { subject: subject.into(), role };
    FixedTokens(HashMap::from([
        (VIEWER, p("vera", Role::Viewer)),
        (OPERATOR, p("otto", Role::Operator)),
        (ADMIN, p("ada", Role::Admin)),
    ]))
}

/// A running API server and its database.
pub struct TestApi {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The database the server uses.
    pub db: Database,
    /// An HTTP client.
    pub client: reqwest::Client,
    /// The host environment the server uses.
    pub env: HostEnv,
    /// The server's state (its event-stream hubs).
    pub state: ApiState,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    _dir: tempfile::TempDir,
    // dropped last: drops the PostgreSQL scratch database
    _pg: Option<PgScratch>,
}

impl TestApi {
    /// A server over a fresh SQLite database.
    pub async fn sqlite() -> TestApi {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}/t.db", dir.path().display());
        TestApi::start(url, dir, None, true, None, None).await
    }

    /// A server over a fresh SQLite database whose per-client rate limit is
    /// `per_second` with `burst`, timed by `clock`.
    pub async fn rate_limited(per_second: u32, burst: u32, clock: governor::clock::FakeRelativeClock) -> TestApi {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}/t.db", dir.path().display());
        TestApi::start(url, dir, None, true, Some((per_second, burst, clock)), None).await
    }

    /// [`TestApi::rate_limited`] whose kept `GET /apps` answers are timed
    /// by `apps_clock` too.
    pub async fn rate_limited_with_apps_cache_clock(
        per_second: u32,
        burst: u32,
        clock: governor::clock::FakeRelativeClock,
        apps_clock: Arc<dyn dc_scheduler::Clock>,
    ) -> TestApi {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}/t.db", dir.path().display());
        TestApi::start(url, dir, None, true, Some((per_second, burst, clock)), Some(apps_clock)).await
    }

    /// A server over a fresh SQLite database whose host environment can
    /// register plugins (the real `dc-host` binary probes them), with
    /// `plugins` (files) registered in order.
    pub async fn with_plugins(plugins: &[std::path::PathBuf]) -> TestApi {
        let api = TestApi::sqlite().await;
        let exe = tokio::task::spawn_blocking(dc_e2e::host_bin).await.expect("build dc-host");
        let env = HostEnv { exe, ..api.env.clone() };
        for p in plugins {
            dc_runtime::registry::register_file(&env, p)
                .await
                .unwrap_or_else(|e| panic!("register {}: {e}", p.display()));
        }
        api
    }

    /// A server over a fresh SQLite database whose kept `GET /apps` answers
    /// (`api.apps_cache_ms`) are timed by `clock`.
    pub async fn with_apps_cache_clock(clock: Arc<dyn dc_scheduler::Clock>) -> TestApi {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}/t.db", dir.path().display());
        TestApi::start(url, dir, None, true, None, Some(clock)).await
    }

    /// A server over an SQLite database without the dc-host schema.
    pub async fn unmigrated() -> TestApi {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}/t.db", dir.path().display());
        TestApi::start(url, dir, None, false, None, None).await
    }

    /// A server over a fresh PostgreSQL scratch database (fails, never skips,
    /// when the server is unreachable).
    pub async fn postgres() -> TestApi {
        let url = dc_e2e::pg::scratch_url("dc_api_test").await;
        let pg = PgScratch::for_url(&url);
        TestApi::start(url, tempfile::tempdir().expect("tempdir"), Some(pg), true, None, None).await
    }

    async fn start(
        url: String,
        dir: tempfile::TempDir,
        pg: Option<PgScratch>,
        migrate: bool,
        limit: Option<(u32, u32, governor::clock::FakeRelativeClock)>,
        apps_clock: Option<Arc<dyn dc_scheduler::Clock>>,
    ) -> TestApi {
        let mut settings = Settings::default();
        settings.general.data_dir = dir.path().to_path_buf();
        settings.general.host_name = Some("api-test-host".into());
        settings.api.cors_origins = vec![ALLOWED_ORIGIN.into()];
        settings.api.max_body_kb = 4;
        // tests make requests as fast as they can; only the rate-limit test limits them
        let (per_second, burst) = limit.as_ref().map_or((1_000_000, 1_000_000), |(r, b, _)| (*r, *b));
        settings.api.requests_per_second_per_client = per_second;
        settings.api.burst_per_client = burst;
        let db = Database::connect_url(&url, &settings).await.unwrap_or_else(|e| panic!("connect {url}: {e}"));
        if migrate {
            db.migrate().await.expect("migrate");
        }
        let env = HostEnv { settings, db: db.clone(), exe: dir.path().join("no-dc-host-binary") };
        let mut state = ApiState::new(env.clone(), Arc::new(tokens()));
        if let Some((_, _, clock)) = limit {
            state = state.with_rate_limit_clock(clock);
        }
        if let Some(clock) = apps_clock {
            state = state.with_apps_cache_clock(clock);
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(dc_api::serve(listener, state.clone(), async move {
            let _ = rx.await;
        }));
        TestApi {
            base,
            db,
            client: reqwest::Client::new(),
            env,
            state,
            shutdown: Some(tx),
            server: Some(server),
            _dir: dir,
            _pg: pg,
        }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GET with a token (None: no Authorization header).
    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut req = self.client.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        answer(req.send().await.expect("GET")).await
    }

    /// A request with a JSON body.
    pub async fn send(&self, method: reqwest::Method, path: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        let mut req = self.client.request(method, self.url(path)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        answer(req.send().await.expect("request")).await
    }

    /// Signals shutdown and waits for the server to finish (a graceful
    /// shutdown that never ends fails the test after 30 s).
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let ended = tokio::time::timeout(std::time::Duration::from_secs(30), server)
                .await
                .expect("the server ends after the shutdown signal");
            ended.expect("server task").expect("serve returns Ok");
        }
    }
}

/// Status and JSON body (Null for an empty body).
pub async fn answer(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text}"))
    };
    (status, body)
}

/// Asserts the API's error shape and returns the code.
pub fn error_code(body: &Value) -> String {
    let e = body.get("error").unwrap_or_else(|| panic!("no error object: {body}"));
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "no message: {body}");
    e["code"].as_str().unwrap_or_else(|| panic!("no code: {body}")).to_string()
}

/// Creates the app `it/tests/NAME` and returns its id.
pub async fn app(db: &Database, name: &str) -> dc_core::AppId {
    apps::ensure_app(db, "it", "tests", name, "scraper", "api test app").await.expect("ensure_app");
    apps::app_id_for("it", "tests", name)
}

/// Creates a PENDING run of `app_id` and returns its id.
pub async fn run(db: &Database, app_id: &dc_core::AppId) -> dc_core::RuntimeId {
    runs::create(
        db,
        &runs::NewRun {
            app_id,
            plugin_version: "1.0.0",
            plugin_hash: "00",
            args: "{}",
            threads: 1,
            host_name: "api-test-host",
        },
    )
    .await
    .expect("create run")
}
