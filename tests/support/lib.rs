//! Support for the end-to-end tests: builds the real `dc-host` binary and plugin
//! cdylibs with cargo, gives each test its own data directory and database
//! (SQLite in a temp dir, or a fresh PostgreSQL database), runs `dc-host`
//! commands, and serves the fixture site on loopback (`dc-fixture-site`); a
//! forward proxy and a proxy judge on loopback live in `proxy`.

pub mod proxy;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use serde_json::Value;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The cargo target directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace().join("target"))
}

/// The version of the workspace's interface crate (`plugin-api/abi/Cargo.toml`),
/// which the host implements.
pub fn interface_version() -> String {
    let toml = std::fs::read_to_string(workspace().join("plugin-api/abi/Cargo.toml")).expect("read abi Cargo.toml");
    toml.lines()
        .find_map(|l| l.strip_prefix("version = \"").and_then(|v| v.strip_suffix('"')))
        .expect("a version line")
        .to_string()
}

/// Runs `cargo build` for packages (no-op when fresh), panicking with cargo's output on failure.
pub fn cargo_build(args: &[&str], envs: &[(&str, &str)]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build").args(args).current_dir(workspace());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("cargo runs");
    assert!(out.status.success(), "cargo build {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// The packages [`build_all`] builds: the host, the standard plugins and the
/// fixture site server (the same set `scripts/test.sh` builds, so neither
/// rebuilds what the other built).
pub const BUILD_PACKAGES: &[&str] = &[
    "-p",
    "dc-host",
    "-p",
    "dc-plugin-catalogue",
    "-p",
    "dc-plugin-crawl",
    "-p",
    "dc-plugin-misbehave",
    "-p",
    "dc-plugin-bulk",
    "-p",
    "dc-fixture-site",
];

/// Builds the host, the standard plugins and the fixture site server once per
/// test process.
pub fn build_all() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| cargo_build(BUILD_PACKAGES, &[]));
}

/// The `dc-host` binary.
pub fn host_bin() -> PathBuf {
    build_all();
    target_dir().join("debug/dc-host")
}

/// A built plugin library (`lib<name>.so` in target/debug).
pub fn plugin_lib(lib_name: &str) -> PathBuf {
    build_all();
    target_dir().join(format!("debug/lib{lib_name}.so"))
}

/// Runs test bodies on both backends without repeating them: for each
/// `fn name(new_host: fn() -> Host)`, generates a module `name` with the tests
/// `sqlite` and `postgres`, which pass [`Host::sqlite`] or [`Host::postgres`]
/// (a fresh, migrated scratch database; the test fails if the server is down)
/// as the constructor of every host the body needs.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[test]
            fn sqlite() {
                super::$name($crate::Host::sqlite);
            }

            #[test]
            fn postgres() {
                super::$name($crate::Host::postgres);
            }
        }
    )+};
}

/// Where a test's host keeps its data, and which database it uses.
pub struct Host {
    /// Temp data dir (removed on drop).
    pub dir: tempfile::TempDir,
    /// Extra environment for every command.
    pub env: Vec<(String, String)>,
    pg_db: Option<String>,
}

const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/postgres";

fn psql(sql: &str) -> Output {
    psql_in("postgres", sql)
}

fn psql_in(db: &str, sql: &str) -> Output {
    Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", db, "-v", "ON_ERROR_STOP=1", "-Atc", sql])
        .output()
        .expect("psql runs (install PostgreSQL: scripts/services.sh)")
}

impl Host {
    /// A host on an embedded SQLite database.
    pub fn sqlite() -> Host {
        let dir = tempfile::tempdir().expect("tempdir");
        let env = vec![("DC_DATA_DIR".to_string(), dir.path().display().to_string())];
        Host { dir, env, pg_db: None }
    }

    /// A host on a fresh PostgreSQL database, migrated as an operator would
    /// (`dc-host db migrate`); fails clearly if the server is down.
    pub fn postgres() -> Host {
        let h = Host::postgres_empty();
        h.ok(&["db", "migrate"]);
        h
    }

    /// Runs SQL in this host's PostgreSQL database (panics on error).
    pub fn pg_sql(&self, sql: &str) -> String {
        let db = self.pg_db.as_deref().expect("a PostgreSQL host");
        let out = psql_in(db, sql);
        assert!(out.status.success(), "psql {sql:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The database URL this host uses.
    pub fn database_url(&self) -> String {
        match &self.pg_db {
            Some(name) => format!("postgres://postgres@127.0.0.1:5432/{name}"),
            None => format!("sqlite://{}", self.dir.path().join("dc-host.db").display()),
        }
    }

    /// Runs SQL statements (one or several, `;`-separated) in this host's
    /// database, on either backend. Panics on error.
    pub fn db_exec(&self, sql: &str) {
        self.db_query(sql, false);
    }

    /// Runs one query in this host's database and returns the first column of
    /// its rows as text (an integer or a text column). Panics on error.
    pub fn db_rows(&self, sql: &str) -> Vec<String> {
        self.db_query(sql, true)
    }

    fn db_query(&self, sql: &str, fetch: bool) -> Vec<String> {
        use sqlx::{Connection, Row};
        fn text<R: Row>(r: &R) -> String
        where
            for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
            for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
            usize: sqlx::ColumnIndex<R>,
        {
            r.try_get::<i64, _>(0).map(|n| n.to_string()).or_else(|_| r.try_get::<String, _>(0)).unwrap_or_default()
        }
        let url = self.database_url();
        let q = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async {
            if self.pg_db.is_some() {
                let mut c = sqlx::PgConnection::connect(&url).await.expect("connect to the host's PostgreSQL database");
                if !fetch {
                    q.execute(&mut c).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
                    return vec![];
                }
                q.fetch_all(&mut c).await.unwrap_or_else(|e| panic!("{sql}: {e}")).iter().map(text).collect()
            } else {
                let mut c = sqlx::SqliteConnection::connect(&url).await.expect("open the host's SQLite database");
                if !fetch {
                    q.execute(&mut c).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
                    return vec![];
                }
                q.fetch_all(&mut c).await.unwrap_or_else(|e| panic!("{sql}: {e}")).iter().map(text).collect()
            }
        })
    }

    /// A host on a fresh, empty PostgreSQL database (no dc-host schema yet).
    pub fn postgres_empty() -> Host {
        let name = format!("dc_e2e_{}", std::process::id()) + &format!("_{}", rand_suffix());
        let out = psql(&format!("CREATE DATABASE {name}"));
        assert!(
            out.status.success(),
            "cannot create a PostgreSQL database at {PG_ADMIN}: {}; start it with scripts/services.sh",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut h = Host::sqlite();
        h.env.push(("DC_DATABASE_URL".into(), format!("postgres://postgres@127.0.0.1:5432/{name}")));
        h.pg_db = Some(name);
        h
    }

    /// The plugins directory.
    pub fn plugins_dir(&self) -> PathBuf {
        let p = self.dir.path().join("plugins");
        std::fs::create_dir_all(&p).expect("plugins dir");
        p
    }

    /// Copies a plugin file into the plugins directory under `name`.
    pub fn install(&self, src: &Path, name: &str) -> PathBuf {
        let dest = self.plugins_dir().join(name);
        // write next to it and rename, as an operator's deploy would
        let tmp = self.plugins_dir().join(format!(".{name}.tmp"));
        std::fs::copy(src, &tmp).expect("copy plugin");
        std::fs::rename(&tmp, &dest).expect("rename plugin");
        dest
    }

    /// A `dc-host` command with this host's environment.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(host_bin());
        c.args(args).current_dir(self.dir.path()).env("DC_LOG", "warn");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Runs a command and returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).stdin(Stdio::null()).output().expect("dc-host runs")
    }

    /// Runs a command that must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "dc-host {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a command that must fail; returns (exit code, stdout + stderr).
    pub fn fails(&self, args: &[&str]) -> (i32, String) {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "dc-host {args:?} should have failed:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap_or(-1), text)
    }

    /// Runs a command with `--json` output and parses it (any exit code).
    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "dc-host {args:?} did not print JSON ({e}):\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// The active version of an app (by group/parent/name), if any.
    pub fn active_version(&self, app: &str) -> Option<String> {
        let apps = self.json(&["plugins", "list", "--json"]);
        apps.as_array()?
            .iter()
            .find(|a| format!("{}/{}/{}", a["group_name"], a["parent_name"], a["app_name"]).replace('"', "") == app)
            .and_then(|a| a["active_version"].as_str().map(str::to_string))
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(db) = &self.pg_db {
            let _ = psql(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"));
        }
    }
}

fn rand_suffix() -> String {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{t:x}")
}

/// The `dc-fixture-site` binary (tests/fixture-site), which serves a static
/// directory on loopback; it is not part of `dc-host`.
pub fn fixture_site_bin() -> PathBuf {
    build_all();
    target_dir().join("debug/dc-fixture-site")
}

/// The catalogue fixture site served by `dc-fixture-site` on loopback.
pub struct FixtureSite {
    child: Child,
    /// Base URL, ending in `/`.
    pub base_url: String,
}

impl FixtureSite {
    /// Starts the server and waits until it listens: it names its address
    /// on stderr (`serving DIR on http://127.0.0.1:PORT/`) once bound.
    pub fn start() -> FixtureSite {
        let mut child = Command::new(fixture_site_bin())
            .arg("--dir")
            .arg(workspace().join("tests/fixtures/catalogue"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("fixture server starts");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        let Some(base_url) = first.rsplit_once(" on ").map(|(_, url)| url.trim().to_string()) else {
            let _ = child.kill();
            panic!("the fixture server did not start; it said: {first:?}");
        };
        // drain what else it writes, so a full pipe never stalls it
        std::thread::spawn(move || lines.for_each(drop));
        FixtureSite { child, base_url }
    }

    /// Runtime arguments pointing the catalogue plugin at this site.
    pub fn args(&self) -> String {
        serde_json::json!({ "base_url": self.base_url }).to_string()
    }
}

impl Drop for FixtureSite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A cross-process lock (`flock` on a file under the target directory). Test
/// binaries run one process per test under nextest, so an in-process mutex does
/// not keep two tests from building into (and copying out of) the same place.
pub struct BuildLock(#[allow(dead_code)] std::fs::File);

/// Takes the build lock `name`, waiting for another process that holds it.
pub fn build_lock(name: &str) -> BuildLock {
    let dir = target_dir().join("e2e-locks");
    std::fs::create_dir_all(&dir).expect("lock dir");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!("{name}.lock")))
        .expect("lock file");
    f.lock().expect("lock");
    BuildLock(f)
}

/// The target directory for fixture variants built by the tests (kept apart
/// from `target/debug`, so building a variant never changes the libraries other
/// tests are using, and kept between runs, so rebuilding is cheap).
pub fn fixture_target_dir() -> PathBuf {
    target_dir().join("e2e-compat")
}

/// Builds the misbehave fixture with manifest version `version` into
/// [`fixture_target_dir`] under a cross-process lock (nextest runs tests in
/// separate processes), so concurrent tests neither race on the copied file nor
/// see `target/debug/libdc_plugin_misbehave.so` change under them; returns a
/// private copy of the library in `dest_dir`.
pub fn misbehave_build(version: &str, dest_dir: &Path) -> PathBuf {
    let _lock = build_lock("misbehave");
    let target = fixture_target_dir();
    let target_arg = target.display().to_string();
    cargo_build(&["-p", "dc-plugin-misbehave", "--target-dir", &target_arg], &[("DC_FIXTURE_VERSION", version)]);
    let dest = dest_dir.join(format!("misbehave-{version}.so"));
    std::fs::copy(target.join("debug/libdc_plugin_misbehave.so"), &dest).expect("copy plugin");
    dest
}

fn write_if_changed(path: &Path, text: &str) {
    if std::fs::read_to_string(path).ok().as_deref() != Some(text) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }
}

/// What a standalone fixture plugin is built against.
pub enum ApiVariant<'a> {
    /// The workspace's own `plugin-api/sdk` (and so `plugin-api/abi`), by path.
    Workspace,
    /// A copy of `plugin-api/abi` and `plugin-api/sdk` with the interface crate
    /// (`dc-plugin-api`) at `version` and source edits `(path under plugin-api/,
    /// from, to)`, e.g. `("abi/src/abi.rs", .., ..)`; every `from` must occur in
    /// the file, and every occurrence is replaced.
    Copy { version: &'a str, edits: &'a [(&'a str, &'a str, &'a str)] },
    /// A frozen SDK kept in the repository (path under the workspace), built
    /// against the frozen interface crate beside it, e.g.
    /// `tests/fixtures/abi/dc-plugin-sdk-0.2.0` (interface 1.1.0).
    Frozen(&'a str),
}

/// Copies the `.rs` files of `src` into `dest`, applying the edits for `prefix`.
fn copy_sources(src: &Path, dest: &Path, prefix: &str, edits: &[(&str, &str, &str)]) {
    for entry in std::fs::read_dir(src).expect("source dir").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let mut text = std::fs::read_to_string(entry.path()).expect("read api source");
        let key = format!("{prefix}/{name}");
        for (file, from, to) in edits.iter().filter(|(f, _, _)| *f == key) {
            assert!(text.contains(from), "plugin-api/{file} no longer contains {from:?}; update the test");
            text = text.replace(from, to);
        }
        write_if_changed(&dest.join(&name), &text);
    }
}

/// Builds `tests/fixtures/plugins/tiny` as a standalone cdylib crate (its own
/// `[workspace]`, the workspace's Cargo.lock) named `dc-fixture-<variant>`
/// against `api`, with build-time `envs`, and copies the library into `dest_dir`.
/// The crate lives under [`fixture_target_dir`]`/crates/<variant>` and files are
/// rewritten only when they change, so repeated runs rebuild nothing.
pub fn tiny_plugin(variant: &str, api: ApiVariant<'_>, envs: &[(&str, &str)], dest_dir: &Path) -> PathBuf {
    let _lock = build_lock(&format!("tiny-{variant}"));
    let ws = workspace();
    let root = fixture_target_dir().join("crates").join(variant);
    let sdk_dep = match api {
        ApiVariant::Workspace => ws.join("plugin-api/sdk"),
        ApiVariant::Frozen(sdk) => ws.join(sdk),
        ApiVariant::Copy { version, edits } => {
            // a directory named after the variant: cargo derives a path
            // package's build hash from its path relative to the workspace
            // root, so copies at the same relative path and version would
            // share (stale) artifacts in the shared target directory
            let abi = root.join(format!("api-{variant}/abi"));
            let sdk = root.join(format!("api-{variant}/sdk"));
            copy_sources(&ws.join("plugin-api/abi/src"), &abi.join("src"), "abi/src", edits);
            copy_sources(&ws.join("plugin-api/sdk/src"), &sdk.join("src"), "sdk/src", edits);
            write_if_changed(
                &abi.join("Cargo.toml"),
                &format!(
                    r#"[package]
name = "dc-plugin-api"
version = "{version}"
edition = "2024"
publish = false

[dependencies]
abi_stable = "0.11.3"
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"
"#
                ),
            );
            write_if_changed(
                &sdk.join("Cargo.toml"),
                r#"[package]
name = "dc-plugin-sdk"
version = "0.7.0"
edition = "2024"
publish = false

[dependencies]
dc-plugin-api = { path = "../abi" }
abi_stable = "0.11.3"
serde = { version = "1", features = ["derive"] }
serde_json = "1"
scraper = "0.29"
url = "2"
encoding_rs = "0.8"
base64 = "0.22"

[features]
# TestHost (plugin-api/sdk/src/testing.rs) is not copied: the feature exists so the copied sources compile cleanly
testing = []
"#,
            );
            sdk
        }
    };
    let dep = format!("dc-plugin-sdk = {{ path = \"{}\" }}", sdk_dep.display());
    standalone_plugin(variant, &ws.join("tests/fixtures/plugins/tiny/src/lib.rs"), &dep, envs, dest_dir)
}

/// Builds `tests/fixtures/plugins/captcha` (solves CAPTCHAs through the host)
/// as a standalone cdylib crate `dc-fixture-<variant>` against the workspace's
/// SDK with build-time `envs`, and copies the library into `dest_dir`.
pub fn captcha_plugin(variant: &str, envs: &[(&str, &str)], dest_dir: &Path) -> PathBuf {
    let _lock = build_lock(&format!("captcha-{variant}"));
    let ws = workspace();
    let dep = format!("dc-plugin-sdk = {{ path = \"{}\" }}", ws.join("plugin-api/sdk").display());
    standalone_plugin(variant, &ws.join("tests/fixtures/plugins/captcha/src/lib.rs"), &dep, envs, dest_dir)
}

/// Builds `tests/fixtures/plugins/http` (drives the HTTP controls of
/// interface 1.4 step by step) as a standalone cdylib crate `dc-fixture-http`
/// against the workspace's SDK, and copies the library into `dest_dir`; with
/// `proxy`, the variant `dc-fixture-http-proxy` whose manifest requires the
/// capability `proxy`.
pub fn http_plugin(proxy: bool, dest_dir: &Path) -> PathBuf {
    let variant = if proxy { "http-proxy" } else { "http" };
    let _lock = build_lock(variant);
    let ws = workspace();
    let dep = format!("dc-plugin-sdk = {{ path = \"{}\" }}", ws.join("plugin-api/sdk").display());
    let envs: &[(&str, &str)] = if proxy { &[("DC_FIXTURE_REQUIRE_PROXY", "1")] } else { &[] };
    standalone_plugin(variant, &ws.join("tests/fixtures/plugins/http/src/lib.rs"), &dep, envs, dest_dir)
}

/// Builds `tests/fixtures/plugins/legacy` against the FROZEN dc-plugin-api 1.0.0
/// (`tests/fixtures/abi/dc-plugin-api-1.0.0`, the interface as it shipped
/// before the ABI/SDK split) and copies the library into `dest_dir`.
pub fn legacy_plugin(dest_dir: &Path) -> PathBuf {
    let _lock = build_lock("legacy-1.0");
    let ws = workspace();
    let dep = format!(
        "dc-plugin-api = {{ path = \"{}\" }}\nabi_stable = \"0.11.3\"",
        ws.join("tests/fixtures/abi/dc-plugin-api-1.0.0").display()
    );
    standalone_plugin("legacy-1-0", &ws.join("tests/fixtures/plugins/legacy/src/lib.rs"), &dep, &[], dest_dir)
}

/// Builds `lib_src` as a standalone cdylib crate `dc-fixture-<variant>` with the
/// given dependency lines and copies `<variant>.so` into `dest_dir`.
fn standalone_plugin(variant: &str, lib_src: &Path, deps: &str, envs: &[(&str, &str)], dest_dir: &Path) -> PathBuf {
    let ws = workspace();
    let root = fixture_target_dir().join("crates").join(variant);
    let lib_name = format!("dc_fixture_{}", variant.replace('-', "_"));
    write_if_changed(
        &root.join("Cargo.toml"),
        &format!(
            r#"[package]
name = "dc-fixture-{variant}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]
path = "{lib}"

[dependencies]
{deps}

[profile.dev]
debug = "line-tables-only"

[workspace]
"#,
            lib = lib_src.display(),
        ),
    );
    if !root.join("Cargo.lock").exists() {
        std::fs::copy(ws.join("Cargo.lock"), root.join("Cargo.lock")).expect("copy Cargo.lock");
    }
    let manifest = root.join("Cargo.toml").display().to_string();
    let target = fixture_target_dir().display().to_string();
    cargo_build(&["--manifest-path", &manifest, "--target-dir", &target, "--offline"], envs);
    let dest = dest_dir.join(format!("{variant}.so"));
    std::fs::copy(fixture_target_dir().join(format!("debug/lib{lib_name}.so")), &dest).expect("copy plugin");
    dest
}

/// Compiles a single-file Rust source as a cdylib with `rustc` into `dest`.
pub fn rustc_cdylib(src: &Path, dest: &Path) {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc)
        .args(["--edition", "2021", "--crate-type", "cdylib", "-o"])
        .arg(dest)
        .arg(src)
        .output()
        .expect("rustc runs");
    assert!(out.status.success(), "rustc {} failed:\n{}", src.display(), String::from_utf8_lossy(&out.stderr));
}

/// SHA-256 of a file, as lowercase hex (via `sha256sum`).
pub fn sha256_hex(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().expect("sha256sum runs");
    assert!(out.status.success(), "sha256sum failed");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string()
}

/// Every file under a directory (recursively) with its size and modification
/// time, sorted: a cheap fingerprint to prove a directory was not touched.
pub fn dir_snapshot(dir: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                stack.push(p);
            } else {
                out.push((p, md.len(), md.modified().unwrap_or(std::time::UNIX_EPOCH)));
            }
        }
    }
    out.sort();
    out
}

/// A child process killed (and reaped) when dropped, whatever the test's outcome.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A named pipe a fixture plugin writes one line to when it reaches a given
/// point (the misbehave plugin's `ready_fifo` argument), so a test waits for
/// that event instead of polling the database.
pub struct Fifo {
    /// Its path.
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Fifo {
    /// Creates a fresh named pipe.
    pub fn new() -> Fifo {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ready");
        let st = Command::new("mkfifo").arg(&path).status().expect("mkfifo runs");
        assert!(st.success(), "mkfifo failed");
        Fifo { path, _dir: dir }
    }

    /// The path as a string (for plugin arguments).
    pub fn as_str(&self) -> &str {
        self.path.to_str().expect("utf-8 path")
    }

    /// Blocks until a writer sends a line and returns it. `limit` only bounds a
    /// broken test: the wait ends on the write, never on the clock.
    pub fn read_line(&self, limit: Duration) -> String {
        let path = self.path.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let _ = tx.send(text);
        });
        let text =
            rx.recv_timeout(limit).unwrap_or_else(|_| panic!("nothing was written to the fifo within {limit:?}"));
        text.lines().next().unwrap_or_default().to_string()
    }
}

impl Fifo {
    /// Opens the pipe for writing (blocking until the reader opens it) and
    /// closes it again, which ends the reader's wait.
    pub fn release(&self) {
        std::fs::OpenOptions::new().write(true).open(&self.path).expect("open fifo for writing");
    }
}

impl Default for Fifo {
    fn default() -> Self {
        Fifo::new()
    }
}

/// Sends a signal to a process (or, with a negative pid, a process group).
#[allow(unsafe_code)]
pub fn send_signal(pid: i32, signal: i32) {
    // SAFETY: kill(2) touches no memory of ours.
    let rc = unsafe { libc::kill(pid, signal) };
    assert!(
        rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH),
        "kill({pid}, {signal}): {}",
        std::io::Error::last_os_error()
    );
}

/// Waits for a process that is not our child to exit (pidfd_open + poll: the
/// wait ends on the exit event). Returns false if it still runs after `limit`,
/// which only bounds a broken test. A pid that is already gone returns true.
#[allow(unsafe_code)]
pub fn wait_pid_exit(pid: i32, limit: Duration) -> bool {
    // SAFETY: pidfd_open takes plain integers and returns a new descriptor we close.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if fd < 0 {
        return std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    }
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    let ms = i32::try_from(limit.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: poll reads and writes the one pollfd we own; close takes our fd.
    let ready = unsafe {
        let n = libc::poll(&mut pfd, 1, ms);
        libc::close(fd);
        n
    };
    ready == 1
}

/// One HTTP request a [`HttpSink`] received.
#[derive(Debug, Clone)]
pub struct SinkRequest {
    /// Request line, e.g. `POST /hook HTTP/1.1`.
    pub line: String,
    /// Header names (lowercase) and values.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// The status the sink answered.
    pub answered: u16,
}

impl SinkRequest {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// A loopback HTTP server that records every request (a webhook receiver
/// speaking plain HTTP/1.1): the first `fail_first` requests are answered 500,
/// the rest 200. Requests arrive on `requests` as they come. `GET /robots.txt`
/// is answered 404 and not recorded.
pub struct HttpSink {
    /// `http://127.0.0.1:PORT/hook`.
    pub url: String,
    /// The requests, in arrival order.
    pub requests: std::sync::mpsc::Receiver<SinkRequest>,
}

impl HttpSink {
    /// Starts a sink on a free loopback port.
    pub fn start(fail_first: usize) -> HttpSink {
        HttpSink::start_with(fail_first, 500, None)
    }

    /// Starts a sink whose first `fail_first` answers have status `status`
    /// (and a `Retry-After` header, if given).
    pub fn start_with(fail_first: usize, status: u16, retry_after: Option<&str>) -> HttpSink {
        let retry_after = retry_after.map(|v| format!("retry-after: {v}\r\n")).unwrap_or_default();
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let url = format!("http://{}/hook", listener.local_addr().expect("address"));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut seen = 0usize;
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = std::io::BufReader::new(stream.try_clone().expect("clone"));
                let Some(head) = RequestHead::read(&mut reader) else { continue };
                let len = head.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
                let mut body = vec![0u8; len];
                let _ = reader.read_exact(&mut body);
                // a sink has no robots.txt (the host's politeness limiter asks for it
                // before a plugin's first request); not counted as a request
                if head.method == "GET" && head.path == "/robots.txt" {
                    let _ = write!(stream, "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                    continue;
                }
                seen += 1;
                let answered = if seen <= fail_first { status } else { 200 };
                let reason = if answered == 200 { "OK" } else { "Unavailable" };
                let extra = if answered == 200 { "" } else { retry_after.as_str() };
                // a JSON body as the Telegram Bot API answers; other webhooks ignore it
                let answer = if answered == 200 { r#"{"ok":true}"# } else { r#"{"ok":false}"# };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {answered} {reason}\r\n{extra}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
                let _ = stream.flush();
                if tx.send(SinkRequest { line: head.line, headers: head.headers, body, answered }).is_err() {
                    return;
                }
            }
        });
        HttpSink { url, requests: rx }
    }
}

/// The head of an HTTP/1.1 request, as the tests' own small servers read it.
pub struct RequestHead {
    /// The request line, trimmed (`GET /path HTTP/1.1`).
    pub line: String,
    /// Its method.
    pub method: String,
    /// Its target (`/` when the line has none).
    pub path: String,
    /// Header names (lower case) and values, in order.
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    /// Reads the request line and the headers; None when the peer sent
    /// nothing or the read failed.
    pub fn read(reader: &mut impl BufRead) -> Option<RequestHead> {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                break;
            }
            if let Some((n, v)) = h.trim().split_once(':') {
                headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or("/").to_string();
        Some(RequestHead { line: line.trim().to_string(), method, path, headers })
    }

    /// A header's value (`name` in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Scratch PostgreSQL databases for the library crates' integration tests
/// (dc-core, dc-runtime): one per test, created on the local server and
/// dropped when its guard is dropped, also when the test panicked.
pub mod pg {
    use std::str::FromStr;

    use sqlx::Connection;

    /// How to start the local PostgreSQL cluster.
    pub const PG_START_HINT: &str = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start";

    /// The admin URL scratch databases are created from (`DC_TEST_PG_ADMIN_URL`).
    pub fn pg_admin_url() -> String {
        std::env::var("DC_TEST_PG_ADMIN_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
    }

    /// Creates a fresh database named `<prefix>_<unique>` and returns its URL;
    /// fails the test (never skips it) when the server is unreachable, saying
    /// how to start it.
    pub async fn scratch_url(prefix: &str) -> String {
        let admin = pg_admin_url();
        let created = async {
            let mut c = sqlx::PgConnection::connect(&admin).await?;
            let name = format!("{prefix}_{}_{}", std::process::id(), super::rand_suffix());
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&mut c).await?;
            c.close().await?;
            let opts = sqlx::postgres::PgConnectOptions::from_str(&admin)?.database(&name);
            Ok::<String, sqlx::Error>(sqlx::ConnectOptions::to_url_lossy(&opts).to_string())
        };
        match created.await {
            Ok(url) => url,
            Err(e) => panic!(
                "PostgreSQL is not reachable ({e}).\n\
                 The PostgreSQL tests need a server at 127.0.0.1:5432 with trust auth (or DC_TEST_PG_ADMIN_URL).\n\
                 Start it with:\n    {PG_START_HINT}\n"
            ),
        }
    }

    /// Drops a scratch database on drop (also when the test panicked).
    pub struct PgScratch {
        name: String,
    }

    impl PgScratch {
        /// The guard of the database `url` names.
        pub fn for_url(url: &str) -> PgScratch {
            let opts = sqlx::postgres::PgConnectOptions::from_str(url).expect("scratch url parses");
            PgScratch { name: opts.get_database().expect("scratch url names a database").to_string() }
        }
    }

    impl Drop for PgScratch {
        fn drop(&mut self) {
            let name = self.name.clone();
            let admin = pg_admin_url();
            // a thread of its own: Drop may run inside (or outside) a runtime
            let result = std::thread::spawn(move || -> Result<(), String> {
                let rt =
                    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
                rt.block_on(async move {
                    let mut c = sqlx::PgConnection::connect(&admin).await.map_err(|e| e.to_string())?;
                    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")))
                        .execute(&mut c)
                        .await
                        .map_err(|e| e.to_string())?;
                    c.close().await.map_err(|e| e.to_string())
                })
            })
            .join();
            match result {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("warning: could not drop scratch database {}: {e}", self.name),
                Err(_) => eprintln!("warning: dropping scratch database {} panicked", self.name),
            }
        }
    }
}

/// Bounds a broken test only: every wait on [`Serve`] ends on an event.
pub const SERVE_LIMIT: Duration = Duration::from_secs(90);

/// A running `dc-host serve --json` and its events (`--tick 0.1` unless the
/// test passes its own).
pub struct Serve {
    /// The process (killed when the test drops it).
    pub child: KillOnDrop,
    /// The events, one JSON object per line of its output.
    pub events: Receiver<Value>,
}

impl Serve {
    pub fn start(host: &Host, extra: &[&str]) -> Serve {
        let s = Serve::start_collecting(host, extra);
        s.wait_for(|e| e["event"] == "serving");
        s
    }

    /// Like [`Serve::start`], but what serve emits before `serving` (the runs
    /// it reaped at start) stays to be waited for.
    pub fn start_collecting(host: &Host, extra: &[&str]) -> Serve {
        let mut args = vec!["serve", "--json"];
        if !extra.contains(&"--tick") {
            args.extend_from_slice(&["--tick", "0.1"]);
        }
        args.extend_from_slice(extra);
        let mut child: Child =
            host.command(&args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("dc-host serve starts");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(out)).map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        Serve { child: KillOnDrop(child), events: rx }
    }

    /// The next event that matches, failing the test when serve ends first.
    pub fn wait_for(&self, wanted: impl Fn(&Value) -> bool) -> Value {
        let mut seen = Vec::new();
        loop {
            match self.events.recv_timeout(SERVE_LIMIT) {
                Ok(e) if wanted(&e) => return e,
                Ok(e) => seen.push(e),
                Err(e) => panic!("serve did not emit the expected event ({e}); it emitted {seen:?}"),
            }
        }
    }

    /// SIGTERM, then every remaining event until it exits; checks it exits 0.
    pub fn terminate(mut self) -> Vec<Value> {
        send_signal(self.child.0.id() as i32, libc::SIGTERM);
        let rest: Vec<Value> = self.events.iter().collect();
        let status = self.child.0.wait().expect("serve ends");
        assert!(status.success(), "serve exits 0 after SIGTERM: {status:?}; events {rest:?}");
        rest
    }
}

/// Runs `dc-host ARGS` with `input` on stdin (for `--password-stdin`).
pub fn with_stdin(host: &Host, args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = host
        .command(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dc-host");
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
    child.wait_with_output().expect("wait")
}
