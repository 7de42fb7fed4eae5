//! CAPTCHA solving through the host (interface 1.3, `captcha.solve`): a real
//! plugin cdylib asks the real worker, which talks to a loopback imitation of
//! anti-captcha.com's documented JSON API (`dc_captcha::fake`; the real
//! service cannot be reached from here) with the client key from the secrets
//! store. The plugin stores the token; the service received exactly the
//! documented JSON; a plugin whose manifest does not require `captcha` is
//! refused by name; a run's cost budget stops further solves; and a host
//! without `[captcha]` neither offers nor registers the capability.

use dc_captcha::fake::{FakeAntiCaptcha, Script};
use dc_e2e::{Host, captcha_plugin, with_stdin};
use serde_json::{Value, json};

const KEY: &str = "e2e0123456789abcdef0123456789abc";
const SITE_KEY: &str = "6Le-e2e-site-key";
const PAGE: &str = "https://shop.test/login";

/// The fake service on its own runtime (kept alive by the returned value).
fn fake_service(script: Script) -> (tokio::runtime::Runtime, FakeAntiCaptcha) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let fake = rt.block_on(FakeAntiCaptcha::start(script));
    (rt, fake)
}

/// Configures `host` for the fake service, with the client key in its secrets store.
fn configure(host: &mut Host, fake: &FakeAntiCaptcha, extra: &[(&str, &str)]) {
    for (k, v) in [
        ("DC_CAPTCHA_PROVIDER", "anticaptcha"),
        ("DC_CAPTCHA_KEY_SECRET", "anticaptcha_key"),
        ("DC_CAPTCHA_BASE_URL", fake.base_url.as_str()),
        // the service's recommended waits (5 s, 2 s) would only slow the test
        ("DC_CAPTCHA_FIRST_POLL_MS", "1"),
        ("DC_CAPTCHA_POLL_INTERVAL_MS", "1"),
    ]
    .into_iter()
    .chain(extra.iter().copied())
    {
        host.env.push((k.to_string(), v.to_string()));
    }
    let out = with_stdin(host, &["secrets", "set", "anticaptcha_key"], KEY);
    assert!(out.status.success(), "secrets set failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn register(host: &Host, lib: &std::path::Path, file: &str, app: &str) {
    host.install(lib, file);
    let out = host.ok(&["reload"]);
    assert!(out.contains(&format!("registered {app} 1.0.0")), "{out}");
}

fn args(solves: u64, balance: bool) -> String {
    json!({"site_key": SITE_KEY, "page_url": PAGE, "solves": solves, "balance": balance}).to_string()
}

fn logs_of(host: &Host, run: &Value) -> String {
    let id = run["runtime_id"].as_str().expect("runtime id");
    host.json(&["runs", "show", id, "--logs", "--json"])["logs"].to_string()
}

/// A plugin requiring `captcha` solves a reCAPTCHA v2 through the host and
/// stores the token; the service got the documented JSON.
fn a_plugin_solves_a_recaptcha_through_the_host(new_host: fn() -> Host) {
    let (_rt, fake) = fake_service(Script::new(KEY).balance(7.25));
    let mut host = new_host();
    configure(&mut host, &fake, &[]);
    let i = host.json(&["interface", "--json"]);
    assert!(i["capabilities"].as_array().is_some_and(|c| c.contains(&json!("captcha"))), "{i}");
    let bin = tempfile::tempdir().expect("tempdir");
    let lib = captcha_plugin("captcha", &[], bin.path());
    register(&host, &lib, "captcha.so", "test/fixtures/captcha");

    let run = host.json(&["run", "test/fixtures/captcha", "--args", &args(1, true), "--json"]);
    assert_eq!(run["status"], "SUCCESS", "{run}");
    assert_eq!(run["inserted"], 1, "{run}");
    let rows = host.json(&["data", "head", "captcha_tokens", "--json"]);
    assert_eq!(rows[0]["token"], "token-7654321", "the service's token was stored: {rows}");
    let logs = logs_of(&host, &run);
    assert!(logs.contains("captcha balance") && logs.contains("7.25"), "captcha.balance answered: {logs}");

    let reqs = fake.requests();
    let paths: Vec<&str> = reqs.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(paths, ["/getBalance", "/createTask", "/getTaskResult", "/getTaskResult", "/getTaskResult"]);
    assert_eq!(reqs[0].1, json!({"clientKey": KEY}));
    assert_eq!(
        reqs[1].1,
        json!({"clientKey": KEY, "task": {"type": "RecaptchaV2TaskProxyless", "websiteURL": PAGE, "websiteKey": SITE_KEY}})
    );
    assert_eq!(reqs[2].1, json!({"clientKey": KEY, "taskId": 7_654_321}));
}

dc_e2e::both_backends!(a_plugin_solves_a_recaptcha_through_the_host);

#[test]
fn a_host_call_is_refused_when_the_manifest_does_not_require_captcha() {
    let (_rt, fake) = fake_service(Script::new(KEY));
    let mut host = Host::sqlite();
    configure(&mut host, &fake, &[]);
    let bin = tempfile::tempdir().expect("tempdir");
    let lib = captcha_plugin(
        "captcha-unrequired",
        &[("DC_FIXTURE_NO_REQUIRE", "1"), ("DC_FIXTURE_NAME", "unrequired")],
        bin.path(),
    );
    register(&host, &lib, "unrequired.so", "test/fixtures/unrequired");
    let run = host.json(&["run", "test/fixtures/unrequired", "--args", &args(1, false), "--json"]);
    assert_eq!(run["status"], "FAILED", "its only item failed: {run}");
    let logs = logs_of(&host, &run);
    assert!(
        logs.contains("captcha.solve")
            && logs.contains("which the plugin's manifest does not require; add .requires(")
            && logs.contains("and rebuild the plugin"),
        "the refusal names the method and the fix: {logs}"
    );
    assert!(fake.requests().is_empty(), "nothing reached the service: {:?}", fake.requests());
}

#[test]
fn the_run_budget_stops_further_solves() {
    // each solve costs $0.0015; the budget of $0.002 allows two to start
    let (_rt, fake) = fake_service(Script::new(KEY).processing_polls(0).cost("0.001500"));
    let mut host = Host::sqlite();
    configure(&mut host, &fake, &[("DC_CAPTCHA_MAX_COST_PER_RUN", "0.002")]);
    let bin = tempfile::tempdir().expect("tempdir");
    let lib = captcha_plugin("captcha", &[], bin.path());
    register(&host, &lib, "captcha.so", "test/fixtures/captcha");
    // one collecting thread, so the solves happen one after the other
    let run = host.json(&["run", "test/fixtures/captcha", "--args", &args(4, false), "--threads", "1", "--json"]);
    assert_eq!(run["inserted"], 2, "{run}");
    let logs = logs_of(&host, &run);
    assert!(
        logs.contains("captcha budget exhausted: this run spent $0.003000 of its captcha.max_cost_per_run $0.002000"),
        "{logs}"
    );
    let creates = fake.requests().iter().filter(|(p, _)| p == "/createTask").count();
    assert_eq!(creates, 2, "no task was created once the budget was spent");
    // the next run has a budget of its own
    let again = host.json(&["run", "test/fixtures/captcha", "--args", &args(1, false), "--json"]);
    assert_eq!(again["status"], "SUCCESS", "{again}");
}

#[test]
fn a_host_without_a_solver_neither_offers_nor_registers_captcha() {
    let host = Host::sqlite();
    let i = host.json(&["interface", "--json"]);
    assert!(i["capabilities"].as_array().is_some_and(|c| !c.contains(&json!("captcha"))), "{i}");
    assert!(i["not_implemented"].as_array().is_some_and(|c| c.contains(&json!("captcha"))), "{i}");
    let bin = tempfile::tempdir().expect("tempdir");
    let lib = captcha_plugin("captcha", &[], bin.path());
    let (code, text) = host.fails(&["plugins", "register", lib.to_str().expect("utf-8")]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("requires the capability \"captcha\" that this host does not implement")
            && text.contains("[captcha]"),
        "{text}"
    );
}
