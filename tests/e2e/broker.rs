//! Operator commands over RabbitMQ (the real broker on 127.0.0.1:5672): `apps
//! start` publishes with confirms and a serving host acts at once; a message
//! an external producer publishes (lapin from the test) starts a run; a
//! malformed one lands in the dead-letter queue while serve goes on; after a
//! broker restart serve reconnects by itself. Serve runs with an hour-long
//! tick, so a run that starts after its first tick came through the broker,
//! not through database polling. Each test has its own exchange and queues;
//! the group `rabbitmq` in `.config/nextest.toml` runs them one at a time
//! (one restarts the broker). Tests wait on serve's events, never on the clock.

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

use dc_e2e::{Host, KillOnDrop, plugin_lib, send_signal};
use lapin::options::{BasicAckOptions, QueueDeleteOptions};
use lapin::options::{BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions};
use lapin::publisher_confirm::Confirmation;
use lapin::types::ShortString;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{Value, json};

const APP: &str = "test/fixtures/misbehave";
const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Bounds a broken test only; every wait below ends on an event.
const LIMIT: Duration = Duration::from_secs(90);

/// This test's exchange and queues on the real broker, deleted at the end.
struct Mq {
    exchange: String,
    queue: String,
    rt: tokio::runtime::Runtime,
}

impl Mq {
    fn new(test: &str) -> Mq {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let name = format!("dc.test.{test}.{}.{nanos:x}", std::process::id());
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        Mq { exchange: name.clone(), queue: name, rt }
    }

    /// The settings that point a host at this broker and these names.
    fn configure(&self, host: &mut Host) {
        host.env.push(("DC_BROKER_URL".into(), URL.into()));
        host.env.push(("DC_BROKER_EXCHANGE".into(), self.exchange.clone()));
        host.env.push(("DC_BROKER_QUEUE".into(), self.queue.clone()));
    }

    async fn connect() -> Connection {
        let props = ConnectionProperties::default()
            .with_executor(tokio_executor_trait::Tokio::current())
            .with_reactor(tokio_reactor_trait::Tokio::current());
        Connection::connect(URL, props).await.expect("connect to RabbitMQ on 127.0.0.1:5672 (scripts/services.sh)")
    }

    /// Publishes a raw body as an external producer would (persistent, with
    /// confirms, to the exchange with routing key `command`).
    fn publish(&self, body: &[u8], message_id: &str) {
        self.rt.block_on(async {
            let conn = Mq::connect().await;
            let ch = conn.create_channel().await.expect("channel");
            ch.confirm_select(ConfirmSelectOptions::default()).await.expect("confirms");
            let props = BasicProperties::default()
                .with_content_type(ShortString::from("application/json"))
                .with_delivery_mode(2)
                .with_message_id(ShortString::from(message_id));
            let opts = BasicPublishOptions { mandatory: true, ..Default::default() };
            let confirm = ch
                .basic_publish(&self.exchange, "command", opts, body, props)
                .await
                .expect("publish")
                .await
                .expect("confirm");
            assert_eq!(confirm, Confirmation::Ack(None), "the broker took the message and routed it");
            conn.close(200, "done").await.expect("close");
        });
    }

    /// Takes every message out of the dead-letter queue.
    fn take_dead_letters(&self) -> Vec<Vec<u8>> {
        self.rt.block_on(async {
            let conn = Mq::connect().await;
            let ch = conn.create_channel().await.expect("channel");
            let mut out = Vec::new();
            while let Some(m) =
                ch.basic_get(&format!("{}.dead", self.queue), BasicGetOptions::default()).await.expect("basic.get")
            {
                m.delivery.ack(BasicAckOptions::default()).await.expect("ack");
                out.push(m.delivery.data.clone());
            }
            conn.close(200, "done").await.expect("close");
            out
        })
    }
}

impl Drop for Mq {
    fn drop(&mut self) {
        self.rt.block_on(async {
            let conn = Mq::connect().await;
            if let Ok(ch) = conn.create_channel().await {
                for q in [self.queue.clone(), format!("{}.dead", self.queue)] {
                    let _ = ch.queue_delete(&q, QueueDeleteOptions::default()).await;
                }
                for x in [self.exchange.clone(), format!("{}.dead", self.exchange)] {
                    let _ = ch.exchange_delete(&x, ExchangeDeleteOptions::default()).await;
                }
            }
            let _ = conn.close(200, "done").await;
        });
    }
}

/// A running `dc-host serve --json` with an hour-long tick, and its events.
struct Serve {
    child: KillOnDrop,
    events: Receiver<Value>,
}

impl Serve {
    /// Starts serve and waits until it serves and consumes from the broker.
    fn start(host: &Host) -> Serve {
        let mut child = host
            .command(&["serve", "--json", "--tick", "3600", "--grace", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dc-host serve starts");
        let out = child.stdout.take().expect("stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        let s = Serve { child: KillOnDrop(child), events: rx };
        s.wait_for("broker_connected", |_| true);
        s
    }

    /// The next event named `event` that matches, failing the test when serve ends first.
    fn wait_for(&self, event: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        let mut seen = Vec::new();
        loop {
            match self.events.recv_timeout(LIMIT) {
                Ok(e) if e["event"] == event && wanted(&e) => return e,
                Ok(e) => seen.push(e),
                Err(e) => panic!("serve did not emit {event} ({e}); it emitted {seen:?}"),
            }
        }
    }

    /// Waits for a run to start from a command and end with SUCCESS.
    fn wait_for_run(&self) {
        let started = self.wait_for("started", |_| true);
        assert_eq!(started["cause"], "command START", "{started}");
        let ended = self.wait_for("ended", |e| e["runtime_id"] == started["runtime_id"]);
        assert_eq!(ended["status"], "SUCCESS", "{ended}");
    }

    /// SIGTERM; checks it stops cleanly.
    fn terminate(mut self) {
        send_signal(self.child.0.id() as i32, libc::SIGTERM);
        let rest: Vec<Value> = self.events.iter().collect();
        let status = self.child.0.wait().expect("serve ends");
        assert!(status.success(), "serve exits 0 after SIGTERM: {status:?}; events {rest:?}");
        assert!(rest.iter().any(|e| e["event"] == "stopped"), "{rest:?}");
    }
}

/// A host with the misbehave plugin, whose runs succeed, pointed at `mq`.
fn host_with_broker(mq: &Mq) -> Host {
    let mut host = Host::sqlite();
    mq.configure(&mut host);
    host.install(&plugin_lib("dc_plugin_misbehave"), "misbehave.so");
    host.ok(&["reload"]);
    host.ok(&["apps", "args", APP, &json!({"mode": "ok", "items": 1}).to_string()]);
    host
}

fn command_message(app: &str, command: &str) -> Value {
    json!({"version": 1, "id": format!("test-{command}-{}", std::process::id()), "app_id": app,
           "command": command, "requested_by": "e2e@test", "requested_at": chrono::Utc::now().to_rfc3339()})
}

fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl").args(args).output().expect("rabbitmqctl runs");
    assert!(out.status.success(), "rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn apps_start_publishes_and_a_serving_host_starts_the_run_at_once() {
    let mq = Mq::new("cli");
    let host = host_with_broker(&mq);
    let serve = Serve::start(&host);
    let out = host.run(&["apps", "start", APP]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !stderr.contains("warning"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("START queued"));
    // the CLI recorded the command in the database first: the message only wakes serve
    let msg = serve.wait_for("message", |_| true);
    assert_eq!((msg["command"].as_str(), msg["recorded"].as_bool()), (Some("START"), Some(true)), "{msg}");
    serve.wait_for_run();
    // acked: nothing is left in the queue; this host consumes it
    let health = host.json(&["broker", "check", "--json"]);
    assert_eq!((health["ok"].as_bool(), health["messages"].as_u64()), (Some(true), Some(0)), "{health}");
    assert_eq!(health["consumers"], 1, "{health}");
    serve.terminate();
}

#[test]
fn a_message_from_an_external_producer_starts_a_run() {
    let mq = Mq::new("raw");
    let host = host_with_broker(&mq);
    let serve = Serve::start(&host);
    mq.publish(command_message(APP, "START").to_string().as_bytes(), "raw-1");
    let msg = serve.wait_for("message", |_| true);
    assert_eq!((msg["app"].as_str(), msg["recorded"].as_bool()), (Some(APP), Some(false)), "{msg}");
    serve.wait_for_run();
    serve.terminate();
}

#[test]
fn a_malformed_message_is_dead_lettered_and_serve_goes_on() {
    let mq = Mq::new("bad");
    let host = host_with_broker(&mq);
    let serve = Serve::start(&host);
    let bad = command_message(APP, "JUMP").to_string();
    mq.publish(bad.as_bytes(), "bad-1");
    let rejected = serve.wait_for("message_rejected", |_| true);
    let reason = rejected["reason"].as_str().unwrap_or_default();
    assert_eq!(rejected["message_id"], "bad-1", "{rejected}");
    assert!(reason.contains("field `command`") && reason.contains("\"JUMP\""), "{rejected}");
    // an app this database does not know is refused too, naming the field
    mq.publish(command_message("no/such/app", "START").to_string().as_bytes(), "bad-2");
    let rejected = serve.wait_for("message_rejected", |_| true);
    assert!(rejected["reason"].as_str().unwrap_or_default().contains("field `app_id`"), "{rejected}");
    let health = host.json(&["broker", "check", "--json"]);
    assert_eq!(health["dead_messages"], 2, "{health}");
    let dead = mq.take_dead_letters();
    assert_eq!(dead.len(), 2);
    assert_eq!(String::from_utf8_lossy(&dead[0]), bad, "kept as it was sent");
    // serve goes on
    mq.publish(command_message(APP, "START").to_string().as_bytes(), "good-1");
    serve.wait_for_run();
    serve.terminate();
}

#[test]
fn serve_reconnects_after_a_broker_restart() {
    let mq = Mq::new("restart");
    let host = host_with_broker(&mq);
    let serve = Serve::start(&host);
    rabbitmqctl(&["stop_app"]);
    // whatever happens below, the broker comes back for the other tests
    struct StartApp;
    impl Drop for StartApp {
        fn drop(&mut self) {
            let _ = Command::new("rabbitmqctl").arg("start_app").output();
        }
    }
    let guard = StartApp;
    let down = serve.wait_for("broker_down", |_| true);
    assert!(down["attempt"].as_u64() >= Some(1), "{down}");
    rabbitmqctl(&["start_app"]);
    drop(guard);
    serve.wait_for("broker_connected", |_| true);
    mq.publish(command_message(APP, "START").to_string().as_bytes(), "after-restart");
    serve.wait_for("message", |e| e["id"].as_str().is_some_and(|id| id.starts_with("test-START")));
    serve.wait_for_run();
    serve.terminate();
}

#[test]
fn a_failed_publish_is_a_warning_and_the_database_command_stands() {
    let mut host = Host::sqlite();
    host.env.push(("DC_BROKER_URL".into(), "amqp://guest:guest@127.0.0.1:1/%2f".into()));
    host.install(&plugin_lib("dc_plugin_misbehave"), "misbehave.so");
    host.ok(&["reload"]);
    let out = host.run(&["apps", "start", APP]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit 0: {stderr}");
    assert!(
        stderr.contains("warning: cannot connect to the broker at amqp://guest:<redacted>@127.0.0.1:1/%2f")
            && stderr.contains("queued in the database")
            && stderr.contains("broker.url"),
        "{stderr}"
    );
    assert!(!stderr.contains("guest:guest"), "no password in messages: {stderr}");
    let pending = host.db_rows("SELECT cmd_flag FROM apps");
    assert_eq!(pending, vec!["PENDING".to_string()]);
    // the health check says the same and exits 1
    let (code, text) = host.fails(&["broker", "check"]);
    assert!(code == 1 && text.contains("not reachable") && text.contains("NOT OK"), "{code}: {text}");
    // with no broker configured it says how to set one
    host.env.retain(|(k, _)| k != "DC_BROKER_URL");
    let (_, text) = host.fails(&["broker", "check"]);
    assert!(text.contains("no broker is configured: set broker.url"), "{text}");
}
