//! The e-mail notification channel against a real SMTP server: aiosmtpd
//! (`tests/support/smtp_sink.py`, installed by `scripts/services.sh`) on
//! loopback with a self-signed certificate the test makes with `openssl`,
//! requiring STARTTLS (or TLS from the first byte) and a login whose password
//! sits in dc-host's secrets store. Tests wait on the JSON lines the server and
//! `serve --json` print and on serve's log lines, never on the clock.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use dc_e2e::{Host, KillOnDrop, plugin_lib, send_signal, with_stdin, workspace};
use serde_json::{Value, json};

const APP: &str = "test/fixtures/misbehave";
/// Bounds a broken test only; every wait below ends on an event.
const LIMIT: Duration = Duration::from_secs(90);
const USER: &str = "alerts";
/// The relay's password: only in the secrets store and the server's argv.
const PASSWORD: &str = "s3cret pässword";

/// A self-signed certificate for 127.0.0.1 and localhost (not a CA, as rustls
/// wants of a server certificate) and its key, in `dir`.
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("relay.pem"), dir.join("relay.key"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs (install it: apt-get install openssl)");
    assert!(out.status.success(), "openssl req failed: {}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}

/// A running `tests/support/smtp_sink.py` and what it reports.
struct SmtpSink {
    _child: KillOnDrop,
    port: u16,
    events: Receiver<Value>,
}

impl SmtpSink {
    /// Starts the server with a certificate from `dir`; `extra`:
    /// `--implicit-tls`, `--refuse-auth`.
    fn start(dir: &Path, extra: &[&str]) -> SmtpSink {
        let (cert, key) = self_signed(dir);
        let mut child = Command::new("python3")
            .arg(workspace().join("tests/support/smtp_sink.py"))
            .arg("--cert")
            .arg(&cert)
            .arg("--key")
            .arg(&key)
            .args(["--user", USER, "--password", PASSWORD])
            .args(extra)
            // it exits when its stdin closes, i.e. with the test
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs (scripts/services.sh installs aiosmtpd)");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| json!({"event": "garbled", "line": line, "error": e.to_string()}));
                if tx.send(v).is_err() {
                    return;
                }
            }
        });
        let sink = SmtpSink { _child: KillOnDrop(child), port: 0, events: rx };
        let listening = sink.next("listening");
        let port = listening["port"].as_u64().expect("a port") as u16;
        SmtpSink { port, ..sink }
    }

    /// The next report of kind `event` (`auth`, `message`), failing the test
    /// when the server ends first.
    fn next(&self, event: &str) -> Value {
        let mut seen = Vec::new();
        loop {
            match self.events.recv_timeout(LIMIT) {
                Ok(v) if v["event"] == event => return v,
                Ok(v) => seen.push(v),
                Err(e) => panic!(
                    "the SMTP server reported no {event} ({e}); it reported {seen:?}. \
                     It needs python3 with aiosmtpd: run scripts/services.sh"
                ),
            }
        }
    }

    /// The next message whose `X-DC-Event` header is `event`.
    fn message(&self, event: &str) -> Value {
        loop {
            let m = self.next("message");
            if m["headers"]["X-DC-Event"] == event {
                return m;
            }
        }
    }
}

/// A running `dc-host serve --json`: its events, and its log lines (stderr).
struct Serve {
    child: KillOnDrop,
    events: Receiver<Value>,
    log: Receiver<String>,
}

impl Serve {
    fn start(host: &Host) -> Serve {
        let mut child: Child = host
            .command(&["serve", "--json", "--tick", "0.1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dc-host serve starts");
        let (out, err) = (child.stdout.take().expect("stdout"), child.stderr.take().expect("stderr"));
        let (tx, events) = channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        let (tx, log) = channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let s = Serve { child: KillOnDrop(child), events, log };
        s.wait_for(|e| e["event"] == "serving");
        s
    }

    /// The next event that matches, failing the test when serve ends first.
    fn wait_for(&self, wanted: impl Fn(&Value) -> bool) -> Value {
        let mut seen = Vec::new();
        loop {
            match self.events.recv_timeout(LIMIT) {
                Ok(e) if wanted(&e) => return e,
                Ok(e) => seen.push(e),
                Err(e) => panic!("serve did not emit the expected event ({e}); it emitted {seen:?}"),
            }
        }
    }

    /// The next log line that contains `needle`, with the lines before it.
    fn log_line(&self, needle: &str) -> (String, Vec<String>) {
        let mut before = Vec::new();
        loop {
            match self.log.recv_timeout(LIMIT) {
                Ok(l) if l.contains(needle) => return (l, before),
                Ok(l) => before.push(l),
                Err(e) => panic!("serve logged no line with {needle:?} ({e}); it logged {before:?}"),
            }
        }
    }

    /// SIGTERM; checks it exits 0 and returns its remaining log lines.
    fn terminate(mut self) -> Vec<String> {
        send_signal(self.child.0.id() as i32, libc::SIGTERM);
        let status = self.child.0.wait().expect("serve ends");
        assert!(status.success(), "serve exits 0 after SIGTERM: {status:?}");
        self.log.try_iter().collect()
    }
}

/// Sets secret `name` through `dc-host secrets set` (the value on stdin).
fn set_secret(host: &Host, name: &str, value: &str) {
    let out = with_stdin(host, &["secrets", "set", name], value);
    assert!(out.status.success(), "secrets set failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// An `email` channel to `url` for everything from INFO up, logging in with
/// the password from the secrets store and trusting `ca_file`.
fn channel_toml(url: &str, ca_file: &Path) -> String {
    format!(
        "[[notify.channels]]\nkind = \"email\"\nurl = \"{url}\"\nfrom = \"dc-host <alerts@example.org>\"\n\
         to = [\"ops@example.org\", \"On Call <oncall@example.org>\"]\nusername = \"{USER}\"\n\
         password = \"${{secret:smtp_password}}\"\nca_file = \"{}\"\nmin_severity = \"INFO\"\n\n",
        ca_file.display()
    )
}

/// A host with the misbehave plugin, the relay's password in its secrets
/// store, and `config` as its configuration file.
fn host_with(config: &str) -> Host {
    let mut host = Host::sqlite();
    let file = host.dir.path().join("dc-host.toml");
    std::fs::write(&file, config).expect("config");
    host.env.push(("DC_CONFIG".into(), file.display().to_string()));
    set_secret(&host, "smtp_password", PASSWORD);
    host.install(&plugin_lib("dc_plugin_misbehave"), "misbehave.so");
    host.ok(&["reload"]);
    host
}

#[test]
fn notices_arrive_by_mail_over_starttls_and_smtps_with_a_login() {
    let certs = tempfile::tempdir().expect("tempdir");
    let (starttls_dir, smtps_dir) = (certs.path().join("starttls"), certs.path().join("smtps"));
    std::fs::create_dir_all(&starttls_dir).expect("dir");
    std::fs::create_dir_all(&smtps_dir).expect("dir");
    let starttls = SmtpSink::start(&starttls_dir, &[]);
    let smtps = SmtpSink::start(&smtps_dir, &["--implicit-tls"]);
    let config = channel_toml(&format!("smtp://127.0.0.1:{}", starttls.port), &starttls_dir.join("relay.pem"))
        + &channel_toml(&format!("smtps://localhost:{}", smtps.port), &smtps_dir.join("relay.pem"));
    let host = host_with(&config);
    // the password resolved from the store is never shown
    let shown = host.ok(&["config", "show"]);
    assert!(!shown.contains(PASSWORD) && shown.contains("password = \"<redacted>\""), "{shown}");
    host.ok(&["apps", "args", APP, &json!({"mode": "fail", "items": 1}).to_string()]);

    let serve = Serve::start(&host);
    for sink in [&starttls, &smtps] {
        let auth = sink.next("auth");
        assert_eq!((auth["login"].as_str(), auth["accepted"].as_bool()), (Some(USER), Some(true)), "{auth}");
        assert_eq!(auth["tls"], true, "logged in over TLS only: {auth}");
        let m = sink.message("host_started");
        assert_eq!((m["tls"].as_bool(), m["login"].as_str()), (Some(true), Some(USER)), "{m}");
        assert_eq!(m["mail_from"], "alerts@example.org", "{m}");
        assert_eq!(m["rcpt_tos"], json!(["ops@example.org", "oncall@example.org"]), "{m}");
        let h = &m["headers"];
        assert_eq!(h["From"], "dc-host <alerts@example.org>", "{m}");
        assert_eq!(h["To"], "ops@example.org, On Call <oncall@example.org>", "{m}");
        let subject = h["Subject"].as_str().unwrap_or_default();
        assert!(subject.starts_with("[dc-host] dc-host serve started on ") && subject.ends_with("(INFO)"), "{m}");
        assert!(h["Date"].is_string() && h["Message-ID"].is_string(), "{m}");
        let body = m["body"].as_str().unwrap_or_default();
        assert!(body.contains("event: host_started\nseverity: INFO\n"), "{body}");
    }

    // a failed run: its reason and its structured data, as pretty JSON
    host.ok(&["apps", "start", APP]);
    let ended = serve.wait_for(|e| e["event"] == "ended");
    assert_eq!(ended["status"], "FAILED", "{ended}");
    let m = starttls.message("run_failed");
    assert_eq!(m["headers"]["Subject"], format!("[dc-host] {APP}: run failed (ERROR)"), "{m}");
    let body = m["body"].as_str().unwrap_or_default();
    let reason = ended["reason"].as_str().unwrap_or_default();
    assert!(!reason.is_empty() && body.starts_with(reason), "the body starts with the reason {reason:?}: {body}");
    assert!(body.contains(&format!("  \"runtime_id\": \"{}\"", ended["runtime_id"].as_str().unwrap_or("?"))), "{body}");
    assert!(body.contains(&format!("  \"app\": \"{APP}\"")), "{body}");
    smtps.message("run_failed");

    let rest = serve.terminate();
    assert!(!rest.iter().any(|l| l.contains("notification failed")), "every notice went through: {rest:?}");
    for sink in [&starttls, &smtps] {
        let m = sink.message("host_stopped");
        assert!(
            m["headers"]["Subject"].as_str().unwrap_or_default().starts_with("[dc-host] dc-host serve stopped on ")
        );
    }
}

#[test]
fn a_relay_that_refuses_the_login_is_logged_and_serving_goes_on() {
    let certs = tempfile::tempdir().expect("tempdir");
    let relay = SmtpSink::start(certs.path(), &["--refuse-auth"]);
    let host = host_with(&channel_toml(&format!("smtp://127.0.0.1:{}", relay.port), &certs.path().join("relay.pem")));
    host.ok(&["apps", "args", APP, &json!({"mode": "ok", "items": 1}).to_string()]);
    let serve = Serve::start(&host);
    // host_started is tried three times, each refused, then dropped with what the relay said
    for _ in 0..3 {
        let auth = relay.next("auth");
        assert_eq!((auth["accepted"].as_bool(), auth["tls"].as_bool()), (Some(false), Some(true)), "{auth}");
    }
    let (dropped, before) = serve.log_line("notification failed three times and is dropped");
    let channel = format!("email channel to 127.0.0.1:{}", relay.port);
    assert!(dropped.contains(&channel) && dropped.contains("host_started") && dropped.contains("535"), "{dropped}");
    assert_eq!(before.iter().filter(|l| l.contains("notification failed; retrying")).count(), 2, "{before:?}");
    assert!(
        !dropped.contains(PASSWORD) && !before.iter().any(|l| l.contains(PASSWORD)),
        "the password is never logged"
    );

    // serving goes on: a run starts and succeeds
    host.ok(&["apps", "start", APP]);
    let ended = serve.wait_for(|e| e["event"] == "ended");
    assert_eq!(ended["status"], "SUCCESS", "{ended}");
    serve.terminate();
    assert!(relay.events.try_iter().all(|e| e["event"] != "message"), "nothing was delivered without a login");
}

#[test]
fn serve_refuses_an_email_channel_whose_ca_file_holds_no_certificate() {
    let mut host = Host::sqlite();
    let ca = host.dir.path().join("ca.pem");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n").expect("write");
    let file = host.dir.path().join("dc-host.toml");
    std::fs::write(&file, channel_toml("smtp://127.0.0.1:1", &ca)).expect("config");
    host.env.push(("DC_CONFIG".into(), file.display().to_string()));
    set_secret(&host, "smtp_password", PASSWORD);
    host.ok(&["db", "migrate"]);
    // serve ends at once; should it serve instead, the wait below fails the test
    let mut serve = KillOnDrop(
        host.command(&["serve", "--json"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dc-host serve starts"),
    );
    let mut err = serve.0.stderr.take().expect("stderr");
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut text);
        let _ = tx.send(text);
    });
    let text = rx.recv_timeout(LIMIT).expect("serve refuses to start instead of serving");
    let status = serve.0.wait().expect("serve ends");
    assert!(!status.success(), "{status:?}: {text}");
    assert!(text.contains("notify.channels[0].ca_file") && text.contains("ca.pem"), "{text}");
}
