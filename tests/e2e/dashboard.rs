//! The dashboard in a real browser: `dc-host serve` with the API serves the
//! page at `/`; Debian's `chromium`, headless, driven by `playwright-core`
//! (`tests/browser/dashboard.mjs`), signs in as an operator, sees the demo
//! app, starts a run with the button, waits until its progress bar shows
//! 100 % and the app succeeded, opens the run's page whose log streams over
//! SSE, and checks that a viewer gets no command buttons. Screenshots go to
//! `target/dashboard.png` and `target/dashboard-run.png`.
//!
//! Without chromium or the npm package the test fails and says how to get
//! them (`scripts/services.sh`); it never skips.

use std::path::PathBuf;
use std::process::Command;

use dc_e2e::{FixtureSite, Host, Serve, plugin_lib, target_dir, with_stdin, workspace};

const APP: &str = "demo/fixtures/catalogue";
const PASSWORD: &str = "pass-w0rd-long";

fn chromium() -> PathBuf {
    let path = std::env::var_os("CHROMIUM").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.is_file(),
        "the dashboard test needs Debian's chromium at {} (or set CHROMIUM); run scripts/services.sh, which installs it",
        path.display()
    );
    path
}

fn browser_dir() -> PathBuf {
    let dir = workspace().join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core/package.json").is_file(),
        "the dashboard test needs playwright-core in {}/node_modules; run scripts/services.sh (npm ci there)",
        dir.display()
    );
    dir
}

#[test]
fn the_dashboard_starts_a_run_and_shows_its_progress_and_log_in_a_real_browser() {
    let chromium = chromium();
    let browser = browser_dir();

    let site = FixtureSite::start();
    let mut host = Host::sqlite();
    host.install(&plugin_lib("dc_plugin_catalogue"), "catalogue.so");
    host.ok(&["reload"]);
    host.ok(&["apps", "args", APP, &site.args()]);
    // the run comes from the button only
    host.ok(&["apps", "schedule", APP, "--off"]);
    for (user, role) in [("ops", "operator"), ("eve", "viewer")] {
        let out = with_stdin(&host, &["users", "add", user, "--role", role, "--password-stdin"], PASSWORD);
        assert!(out.status.success(), "{out:?}");
    }
    host.env.push(("DC_API_ENABLED".into(), "true".into()));
    host.env.push(("DC_API_LISTEN".into(), "127.0.0.1:0".into()));
    let serve = Serve::start_collecting(&host, &["--tick", "600"]);
    let listening = serve.wait_for(|e| e["event"] == "api_listening");
    let api = listening["url"].as_str().expect("the API's URL").to_string();
    let base = api.strip_suffix("/api/v1").expect("the API URL ends in /api/v1").to_string();
    serve.wait_for(|e| e["event"] == "serving");

    let shot = target_dir().join("dashboard.png");
    let run_shot = target_dir().join("dashboard-run.png");
    for p in [&shot, &run_shot] {
        let _ = std::fs::remove_file(p);
    }
    let out = Command::new("node")
        .arg(browser.join("dashboard.mjs"))
        .current_dir(&browser)
        .env("DC_URL", &base)
        .env("DC_APP", APP)
        .env("DC_OPERATOR", "ops")
        .env("DC_VIEWER", "eve")
        .env("DC_PASSWORD", PASSWORD)
        .env("DC_SCREENSHOT", &shot)
        .env("DC_RUN_SCREENSHOT", &run_shot)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("node runs (apt-get install nodejs)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the browser test failed:\n{stderr}\n{stdout}");
    let seen: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("the script prints what it saw");
    assert_eq!(seen["wrong_password_refused"], true, "{seen}");
    assert_eq!(seen["role"], "ops · operator", "{seen}");
    assert_eq!(seen["state_before"], "never", "{seen}");
    assert_eq!(seen["progress"], "100", "{seen}");
    assert_eq!(seen["state_after"], "success", "{seen}");
    assert_eq!(seen["charts"], 3, "{seen}");
    assert!(seen["log_records"].as_u64().is_some_and(|n| n > 0), "{seen}");
    assert_eq!(seen["run_progress"], "100", "{seen}");
    assert_eq!(seen["viewer_buttons"], 0, "{seen}");

    // the button's command started exactly the run the page showed
    let started = serve.wait_for(|e| e["event"] == "started");
    assert_eq!(started["cause"], "command START", "{started}");
    let ended = serve.wait_for(|e| e["event"] == "ended");
    assert_eq!(ended["status"], "SUCCESS", "{ended}");
    let run_id = started["runtime_id"].as_str().expect("the run's id");
    assert_eq!(seen["run_url"], format!("/runs/{run_id}"), "{seen}");

    for p in [&shot, &run_shot] {
        let png = std::fs::read(p).unwrap_or_else(|e| panic!("screenshot {}: {e}", p.display()));
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{} is a PNG", p.display());
    }
    serve.terminate();
}
