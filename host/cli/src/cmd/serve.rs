//! `dc-host serve`: the manager. It starts apps on their schedules and on
//! operator commands (`dc-host apps start|stop|restart|enable|disable`), runs
//! each in its own worker process, writes a heartbeat (`dc-host hosts list`),
//! and on SIGTERM or Ctrl-C stops claiming work, lets running runs finish up to
//! `--grace` seconds, then stops them. Prints one line per event (`--json`:
//! one JSON object per line). With `broker.url` set it also consumes commands
//! from RabbitMQ and acts on them at once.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use dc_orchestrator::{Event, ServeOptions};
use dc_runtime::HostEnv;
use dc_scheduler::{MissedPolicy, SystemClock};

/// Arguments of `serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// Seconds between looks at schedules and commands.
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    tick: f64,
    /// Seconds running runs may go on after a shutdown request before they are stopped.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    grace: u64,
    /// Fire times missed while no host was serving: `skip`, or `catch-up-once`.
    #[arg(long, default_value = "skip", value_name = "POLICY")]
    missed: String,
    /// Seconds without a heartbeat after which another host is taken for dead
    /// and its running runs are ended as orphaned.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    host_timeout: u64,
    /// Start each app's scheduled runs up to this many seconds after their
    /// fire time, by a delay fixed per app and fire time (the same on every
    /// host), so apps on one schedule do not all start at once; 0: none.
    #[arg(long, default_value_t = 0.0, value_name = "SECS")]
    jitter: f64,
    /// Print events as JSON lines.
    #[arg(long)]
    json: bool,
}

fn describe(e: &Event) -> String {
    match e {
        Event::Serving { host } => format!("serving on {host}: claiming scheduled runs and commands (Ctrl-C to stop)"),
        Event::Reaped { runtime_id } => {
            format!("run {runtime_id} was orphaned (its worker or its host is gone) and is now FAILED")
        }
        Event::Command { app, command } => format!("{app}: command {command}"),
        Event::Started { app, runtime_id, cause } => format!("{app}: started run {runtime_id} ({cause})"),
        Event::Ended { app, runtime_id, status, reason } => match reason {
            Some(r) => format!("{app}: run {runtime_id} ended {status}: {r}"),
            None => format!("{app}: run {runtime_id} ended {status}"),
        },
        Event::Deferred { app, reason } => format!("{app}: waiting: {reason}"),
        Event::Skipped { app, reason } => format!("{app}: not started: {reason}"),
        Event::Disabled { app, failures } => {
            format!(
                "{app}: disabled after {failures} failed runs in a row; `dc-host apps enable {app}` when it is fixed"
            )
        }
        Event::Error { message } => format!("error: {message}"),
        Event::Purged { purged } => format!(
            "retention: deleted {} runs, {} change-feed entries, {} log records, {} function calls, {} audit entries",
            purged.runs, purged.changes, purged.logs, purged.function_calls, purged.audit_entries
        ),
        Event::BrokerConnected { queue } => format!("broker: consuming commands from queue {queue}"),
        Event::BrokerDown { error, attempt, retry_in_ms } => format!(
            "broker: {error}; reconnecting in {:.1}s (attempt {attempt}); commands still arrive through the database",
            *retry_in_ms as f64 / 1000.0
        ),
        Event::Message { id, app, command, .. } => format!("broker: message {id}: {command} {app}"),
        Event::MessageRejected { message_id, reason } => format!(
            "broker: rejected message {} to the dead-letter queue: {reason}",
            message_id.as_deref().unwrap_or("(no message_id)")
        ),
        Event::MessageRequeued { message_id, reason } => {
            format!("broker: message {message_id} requeued: {reason}")
        }
        Event::ShuttingDown { running } => format!("shutting down: no new runs; waiting for {running} running run(s)"),
        Event::Stopped => "stopped".into(),
    }
}

pub async fn exec(a: ServeArgs, env: &HostEnv) -> anyhow::Result<ExitCode> {
    let missed = match a.missed.as_str() {
        "skip" => MissedPolicy::Skip,
        "catch-up-once" => MissedPolicy::CatchUpOnce,
        other => anyhow::bail!("--missed {other:?}: use skip or catch-up-once"),
    };
    if !(a.tick.is_finite() && a.tick >= 0.05) {
        anyhow::bail!("--tick {}: use at least 0.05 seconds", a.tick);
    }
    if !(a.jitter.is_finite() && a.jitter >= 0.0) {
        anyhow::bail!("--jitter {}: use 0 or more seconds", a.jitter);
    }
    if a.host_timeout == 0 {
        anyhow::bail!("--host-timeout 0: use at least 1 second");
    }
    // the serve loop's counters and the API's gauges, served at /metrics
    let mut registry = prometheus_client::registry::Registry::default();
    let serve_metrics = dc_orchestrator::metrics::ServeMetrics::register(&mut registry);
    let gauges = dc_api::metrics::Gauges::register(&mut registry);
    let metrics = dc_api::metrics::Metrics { registry: Arc::new(registry), gauges };
    // commands queued through the REST API wake the serve loop
    let wake = Arc::new(tokio::sync::Notify::new());
    let opts = ServeOptions {
        tick: Duration::from_secs_f64(a.tick),
        grace: Duration::from_secs(a.grace),
        missed,
        host_timeout: Duration::from_secs(a.host_timeout),
        jitter: dc_scheduler::Jitter::new(Duration::from_secs_f64(a.jitter)),
        wake: Some(wake.clone()),
        metrics: Some(serve_metrics),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        let _ = stop_tx.send(true);
    });
    let api = if env.settings.api.enabled { Some(start_api(env, wake, metrics, stop_rx.clone()).await?) } else { None };
    if let Some((addr, _)) = &api {
        let url = format!("http://{addr}/api/v1");
        if a.json {
            println!("{}", serde_json::json!({"event": "api_listening", "url": url}));
        } else {
            println!("REST API listening on {url} (token endpoint {url}/auth/token)");
        }
    }
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let task = tokio::spawn(dc_orchestrator::serve(env.clone(), Arc::new(SystemClock), opts, None, stop_rx, tx));
    while let Some(e) = rx.recv().await {
        if a.json {
            println!("{}", serde_json::to_string(&e)?);
        } else {
            println!("{}", describe(&e));
        }
    }
    task.await??;
    if let Some((addr, server)) = api {
        server.await?.map_err(|e| anyhow::anyhow!("the REST API on {addr} failed: {e}"))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Binds `api.listen`, opens the token authority and serves the REST API
/// (with its token endpoint) until `stop` turns true; returns the address it
/// listens on (`api.listen` may ask for port 0) and the server task.
async fn start_api(
    env: &HostEnv,
    wake: Arc<tokio::sync::Notify>,
    metrics: dc_api::metrics::Metrics,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
    let listen = env.settings.api.listen;
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot serve the REST API on api.listen = {listen}: {e}; choose a free address (DC_API_LISTEN) or set api.enabled = false"
        )
    })?;
    let addr = listener.local_addr()?;
    let authority = Arc::new(
        dc_auth::Authority::open(env.db.clone(), &env.settings)
            .await
            .map_err(|e| anyhow::anyhow!("the REST API cannot open its token authority: {e}"))?,
    );
    // commands queued through the API wake this serve's loop
    let state = dc_api::ApiState::new(env.clone(), authority.clone()).with_wake(wake).with_metrics(metrics);
    let router = dc_api::router_with_auth(state, dc_auth::router(authority));
    let shutdown = async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    Ok((addr, tokio::spawn(dc_api::serve_router(listener, router, shutdown))))
}
