//! Shared harness: a [`HostEnv`] per test on a fresh, migrated database of
//! either backend (with its own data directory, so its own plugin store), the
//! real `dc-host` binary as `exe`, and helpers to register the misbehave
//! fixture, run it and read what the registry holds.

use std::path::{Path, PathBuf};
use std::time::Duration;

use dc_core::apps::{self, AppRow};
use dc_core::runs::RunRow;
use dc_core::{Database, ErrorKind, Settings};
use dc_runtime::HostEnv;
use dc_runtime::registry::{self, RegisterOutcome};
use dc_runtime::supervisor::{self, RunOptions};
use serde_json::Value;

/// The misbehave fixture's app.
pub const APP: &str = "test/fixtures/misbehave";

/// Bounds a broken test only; every wait ends on an event.
pub const LIMIT: Duration = Duration::from_secs(60);

use dc_e2e::pg::PgScratch;

/// A host environment on a fresh, migrated database, removed when dropped.
pub struct TestEnv {
    /// Settings (data dir = `dir`), database and the `dc-host` binary.
    pub env: HostEnv,
    /// The data directory (plugins dir, store, SQLite file); tests may put files here.
    pub dir: tempfile::TempDir,
    // dropped last: drops the PostgreSQL scratch database
    _pg: Option<PgScratch>,
}

impl TestEnv {
    /// SQLite under a new temp data directory, migrated.
    pub async fn sqlite() -> TestEnv {
        TestEnv::new(None).await
    }

    /// A new PostgreSQL scratch database, migrated. Panics (the test FAILS)
    /// when the server is unreachable, saying how to start it.
    pub async fn postgres() -> TestEnv {
        TestEnv::new(Some(dc_e2e::pg::scratch_url("dc_runtime_it").await)).await
    }

    async fn new(pg_url: Option<String>) -> TestEnv {
        let pg = pg_url.as_deref().map(PgScratch::for_url);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut settings = Settings::default();
        settings.general.data_dir = dir.path().to_path_buf();
        settings.database.url = pg_url;
        // the worker waits for SQLite's write lock as long as a test may last
        settings.database.busy_timeout_secs = LIMIT.as_secs();
        settings.runs.threads = 1;
        let url = settings.database_url();
        let db = Database::connect(&settings).await.unwrap_or_else(|e| panic!("connect to {url}: {e}"));
        db.migrate().await.unwrap_or_else(|e| panic!("migrate {url}: {e}"));
        // building is blocking (cargo) and done once per test process
        let exe = tokio::task::spawn_blocking(dc_e2e::host_bin).await.expect("build dc-host");
        TestEnv { env: HostEnv { settings, db, exe }, dir, _pg: pg }
    }

    /// The database.
    pub fn db(&self) -> &Database {
        &self.env.db
    }

    /// A directory for plugin builds, outside the plugins directory.
    pub fn builds_dir(&self) -> PathBuf {
        let d = self.dir.path().join("builds");
        std::fs::create_dir_all(&d).expect("builds dir");
        d
    }

    /// Builds the misbehave fixture with manifest version `version` (cargo,
    /// under the e2e build lock) and returns a private copy of the library.
    pub async fn misbehave_build(&self, version: &str) -> PathBuf {
        let (version, dest) = (version.to_string(), self.builds_dir());
        tokio::task::spawn_blocking(move || dc_e2e::misbehave_build(&version, &dest)).await.expect("build plugin")
    }

    /// Registers the misbehave fixture (target/debug, version 1.0.0) and
    /// returns its app row.
    pub async fn with_misbehave(&self) -> AppRow {
        let lib = tokio::task::spawn_blocking(|| dc_e2e::plugin_lib("dc_plugin_misbehave")).await.expect("build");
        let out = registry::register_file(&self.env, &lib).await.expect("misbehave registers");
        assert!(matches!(&out, RegisterOutcome::Registered { version, .. } if version == "1.0.0"), "{out:?}");
        self.app().await
    }

    /// The misbehave app's row, as it is now.
    pub async fn app(&self) -> AppRow {
        apps::resolve_app(self.db(), APP).await.expect("the misbehave app exists")
    }

    /// Runs the misbehave app to its end with `args` on one thread.
    pub async fn run(&self, args: Value, time_limit: Option<Duration>) -> RunRow {
        let app = self.app().await;
        let opts = RunOptions { args: Some(args), threads: Some(1), time_limit: time_limit.or(Some(LIMIT)) };
        supervisor::run_app(&self.env, &app, &opts).await.expect("the run is supervised to its end")
    }

    /// What the registry holds: every app with its active version and hash,
    /// and every registered version of every app with its hash and store path.
    pub async fn registry_state(&self) -> RegistryState {
        let mut apps_now = Vec::new();
        let mut versions = Vec::new();
        for a in apps::list_apps(self.db()).await.expect("list apps") {
            apps_now.push((a.path(), a.active_version.clone(), a.active_hash.clone()));
            for v in apps::versions(self.db(), &a.app_id).await.expect("versions") {
                versions.push((a.path(), v.version, v.sha256, v.store_path));
            }
        }
        apps_now.sort();
        versions.sort();
        RegistryState { apps: apps_now, versions, store: dc_e2e::dir_snapshot(&self.env.settings.store_dir()) }
    }
}

/// A snapshot of the registry and the plugin store, to prove a refusal changed nothing.
#[derive(Debug, PartialEq)]
pub struct RegistryState {
    /// (app, active version, active hash).
    pub apps: Vec<(String, Option<String>, Option<String>)>,
    /// (app, version, sha256, store path).
    pub versions: Vec<(String, String, String, String)>,
    /// Every file in the store with its size and modification time.
    pub store: Vec<(PathBuf, u64, std::time::SystemTime)>,
}

/// Writes a file that is named like a plugin but is text.
pub fn text_file(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, "release notes, saved under the wrong name\n".repeat(4)).expect("write");
    p
}

/// The message of an error of `kind` (panics on success or an error of another kind).
pub fn refusal<T: std::fmt::Debug>(r: Result<T, dc_runtime::RuntimeError>, kind: ErrorKind) -> String {
    match r {
        Err(e) if e.kind() == kind => e.to_string(),
        other => panic!("expected an error of kind {kind:?}, got {other:?}"),
    }
}
