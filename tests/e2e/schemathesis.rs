//! The OpenAPI document against the server it describes: a real `dc-host
//! serve` with the API, a demo app and an admin token, and `schemathesis`
//! (`st run`, pinned in `scripts/services.sh`) generating requests for every
//! operation from the document: no answer may be a 5xx
//! (`not_a_server_error`) and every answer must match its documented schema
//! (`response_schema_conformance`). The example count is bounded so the
//! test stays under about two minutes; st's output is printed on failure.
//! Without `st` the test fails and says how to get it; it never skips.

use std::process::Command;

use dc_e2e::{Host, Serve, plugin_lib, with_stdin};

const PASSWORD: &str = "schema-pass-w0rd";

/// `st`, or the fix.
fn st() -> String {
    let st = std::env::var("SCHEMATHESIS").unwrap_or_else(|_| "st".into());
    let found = Command::new(&st).arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(found, "this test needs schemathesis (`{st}`); run scripts/services.sh, which installs the pinned version");
    st
}

/// An access token from the password grant (a minimal HTTP/1.1 POST).
fn password_token(api: &str, user: &str, password: &str) -> String {
    use std::io::{Read, Write};
    let rest = api.strip_prefix("http://").expect("an http URL");
    let (addr, base) = rest.split_at(rest.find('/').expect("a path"));
    let form = format!("grant_type=password&username={user}&password={password}");
    let mut s = std::net::TcpStream::connect(addr).expect("the API accepts connections");
    write!(
        s,
        "POST {base}/auth/token HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
        form.len()
    )
    .expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let (head, body) = out.split_once("\r\n\r\n").expect("headers end");
    assert!(head.starts_with("HTTP/1.1 200"), "{out}");
    let v: serde_json::Value = serde_json::from_str(body).expect("token JSON");
    v["access_token"].as_str().expect("an access token").to_string()
}

#[test]
fn schemathesis_finds_no_server_error_and_no_schema_mismatch() {
    let st = st();
    let mut host = Host::sqlite();
    host.install(&plugin_lib("dc_plugin_misbehave"), "misbehave.so");
    host.ok(&["reload"]);
    let out = with_stdin(&host, &["users", "add", "root", "--role", "admin", "--password-stdin"], PASSWORD);
    assert!(out.status.success(), "{out:?}");
    host.env.push(("DC_API_ENABLED".into(), "true".into()));
    host.env.push(("DC_API_LISTEN".into(), "127.0.0.1:0".into()));
    // st sends as fast as it can: the limits are tested elsewhere
    host.env.push(("DC_API_REQUESTS_PER_SECOND_PER_CLIENT".into(), "100000".into()));
    host.env.push(("DC_API_BURST_PER_CLIENT".into(), "100000".into()));
    host.env.push(("DC_AUTH_TOKEN_RATE_PER_MINUTE".into(), "100000".into()));
    host.env.push(("DC_AUTH_TOKEN_RATE_BURST".into(), "100000".into()));
    // no run starts by itself; commands st sends are queued and may start runs
    let serve = Serve::start_collecting(&host, &["--tick", "600"]);
    let listening = serve.wait_for(|e| e["event"] == "api_listening");
    let api = listening["url"].as_str().expect("the API's URL").to_string();
    serve.wait_for(|e| e["event"] == "serving");

    let token = password_token(&api, "root", PASSWORD);
    let scratch = tempfile::tempdir().expect("tempdir");
    let out = Command::new(&st)
        .args(["run", &format!("{api}/openapi.json")])
        .args(["--checks", "not_a_server_error,response_schema_conformance"])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        // event streams never end while their app exists
        .args(["--exclude-path-regex", "/events$"])
        .args(["--max-examples", "15", "--seed", "1", "--request-timeout", "10", "--no-color"])
        // st keeps state (.schemathesis/) in its working directory: not in the source tree
        .args(["--generation-database", "none"])
        .current_dir(scratch.path())
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .expect("st runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{text}");
    assert!(out.status.success(), "schemathesis found failures (exit {:?}):\n{text}", out.status.code());
    serve.terminate();
}
