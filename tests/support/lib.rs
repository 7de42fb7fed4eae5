//! Support for the end-to-end tests: builds the real `dc-host` binary and plugin
//! cdylibs with cargo, gives each test its own data directory and database
//! (SQLite in a temp dir, or a fresh PostgreSQL database), runs `dc-host`
//! commands, and serves the fixture site on loopback.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The cargo target directory.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace().join("target"))
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

/// Builds the host and the standard plugins once per test process.
pub fn build_all() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| cargo_build(&["-p", "dc-host", "-p", "dc-plugin-catalogue", "-p", "dc-plugin-misbehave"], &[]));
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

/// Builds the misbehave fixture with a given manifest version and returns a
/// private copy of the library (the build output is overwritten by the next build).
pub fn misbehave_version(version: &str, dest_dir: &Path) -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    cargo_build(&["-p", "dc-plugin-misbehave"], &[("DC_FIXTURE_VERSION", version)]);
    let dest = dest_dir.join(format!("misbehave-{version}.so"));
    std::fs::copy(target_dir().join("debug/libdc_plugin_misbehave.so"), &dest).expect("copy plugin");
    // put the default build back for other tests in this process
    cargo_build(&["-p", "dc-plugin-misbehave"], &[]);
    dest
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
    Command::new("psql").args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres", "-Atc", sql]).output().expect(
        "psql runs (install PostgreSQL: scripts/services.sh)",
    )
}

impl Host {
    /// A host on an embedded SQLite database.
    pub fn sqlite() -> Host {
        let dir = tempfile::tempdir().expect("tempdir");
        let env = vec![("DC_DATA_DIR".to_string(), dir.path().display().to_string())];
        Host { dir, env, pg_db: None }
    }

    /// A host on a fresh PostgreSQL database (fails clearly if the server is down).
    pub fn postgres() -> Host {
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
        assert!(!out.status.success(), "dc-host {args:?} should have failed:\n{}", String::from_utf8_lossy(&out.stdout));
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

/// The catalogue fixture site served by `dc-host fixture-server` on loopback.
pub struct FixtureSite {
    child: Child,
    /// Base URL, ending in `/`.
    pub base_url: String,
}

impl FixtureSite {
    /// Starts the server and waits until it listens.
    pub fn start() -> FixtureSite {
        let dir = tempfile::tempdir().expect("tempdir");
        let port_file = dir.path().join("port");
        let child = Command::new(host_bin())
            .args(["fixture-server", "--dir"])
            .arg(workspace().join("tests/fixtures/catalogue"))
            .arg("--port-file")
            .arg(&port_file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("fixture server starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        let port = loop {
            if let Ok(p) = std::fs::read_to_string(&port_file)
                && !p.is_empty()
            {
                break p;
            }
            assert!(Instant::now() < deadline, "fixture server did not start within 10s");
            std::thread::sleep(Duration::from_millis(20));
        };
        FixtureSite { child, base_url: format!("http://127.0.0.1:{port}/") }
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

/// Polls until `f` returns Some or the timeout passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
