//! `dc-host runs`: list runs, show one (status, timings, exit reason, counters,
//! change feed, logs, request metrics), ask a run to stop, and end runs whose
//! worker is gone.

use std::process::ExitCode;

use clap::Subcommand;
use dc_core::runs::RunRow;
use dc_core::{apps, logs, runs};
use dc_runtime::HostEnv;
use dc_runtime::stop::StopOutcome;
use serde::Serialize;

use crate::output;

/// Run commands.
#[derive(Subcommand)]
pub enum RunsCommand {
    /// Recent runs, newest first.
    List {
        /// Only runs of this app (id, prefix or group/parent/name).
        #[arg(long)]
        app: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: i64,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// One run: status, timings, exit reason, counters.
    Show {
        /// Run id (or a unique prefix of 6+ characters).
        runtime_id: String,
        /// Also list the keys inserted / updated / deleted.
        #[arg(long)]
        changes: bool,
        /// Also print the run's log records.
        #[arg(long)]
        logs: bool,
        /// Also list the watched host function calls of the run (#[fun_watch]).
        #[arg(long)]
        functions: bool,
        /// Also show the run's HTTP request metrics: requests, status codes,
        /// bytes, retries, errors, latency percentiles, per domain and proxy.
        #[arg(long)]
        metrics: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Ask a running run to stop (the plugin is told through should_stop()).
    Stop {
        /// Run id (or a unique prefix of 6+ characters).
        runtime_id: String,
    },
    /// Delete ended runs, their change feeds, log records and function calls
    /// older than N days, in small batches (`dc-host serve` does it hourly
    /// with `runs.retention_days`).
    Purge {
        /// Age in days.
        #[arg(long, value_name = "DAYS")]
        older_than_days: u32,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// End RUNNING runs of this host whose worker process is gone (FAILED, reason
    /// `orphaned`). Long-running commands do this when they start.
    Reap {
        /// JSON output (the runs ended).
        #[arg(long)]
        json: bool,
    },
}

fn duration(r: &RunRow) -> String {
    match (r.started_at, r.ended_at) {
        (Some(s), Some(e)) => format!("{:.1}s", (e - s).num_milliseconds() as f64 / 1000.0),
        (Some(_), None) => "running".into(),
        _ => "-".into(),
    }
}

/// Prints a run for humans.
pub fn print_run(r: &RunRow, app: &str) {
    println!("run        {}", r.runtime_id);
    println!("app        {app} {} ({})", r.plugin_version, output::short(&r.plugin_hash));
    println!("status     {}", r.status);
    if let Some(reason) = &r.reason {
        println!("reason     {reason}");
    }
    if let Some(from) = &r.resumed_from {
        println!("resumed    from run {from}");
    }
    println!("started    {}   ended {}   took {}", output::ts(r.started_at), output::ts(r.ended_at), duration(r));
    let exit = match (r.exit_code, r.exit_signal) {
        (Some(c), _) => format!("exit code {c}"),
        (_, Some(s)) => format!("signal {s}"),
        _ => "-".into(),
    };
    println!(
        "worker     pid {}  {exit}  on {}",
        r.worker_pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
        r.host_name
    );
    println!(
        "items      {} of {} collected, {} failed ({} threads)",
        r.current_count, r.total_count, r.error_count, r.threads
    );
    println!(
        "rows       {} inserted, {} updated, {} deleted, {} unchanged",
        r.inserted, r.updated, r.deleted, r.unchanged
    );
}

/// Whether an ended run can be continued with `dc-host run APP --resume ID`.
#[derive(Serialize)]
struct Resume {
    /// The run that resumed this one.
    #[serde(skip_serializing_if = "Option::is_none")]
    resumed_by: Option<dc_core::RuntimeId>,
    /// It can be resumed now (ended FAILED or STOPPED, items saved, not resumed yet).
    resumable: bool,
    /// Its saved work items by state.
    items: dc_core::run_items::ItemCounts,
}

async fn resume_state(env: &HostEnv, r: &RunRow) -> anyhow::Result<Resume> {
    let resumed_by = runs::resumed_by(&env.db, &r.runtime_id).await?;
    let items = dc_core::run_items::counts(&env.db, &r.runtime_id).await?;
    let ended_badly = matches!(
        r.status.parse::<dc_core::enums::RunStatus>(),
        Ok(dc_core::enums::RunStatus::Failed | dc_core::enums::RunStatus::Stopped)
    );
    Ok(Resume { resumable: ended_badly && resumed_by.is_none() && items.total() > 0, resumed_by, items })
}

#[derive(Serialize)]
struct RunDetail<'a> {
    #[serde(flatten)]
    run: &'a RunRow,
    resume: Resume,
    #[serde(skip_serializing_if = "Option::is_none")]
    changes: Option<Vec<runs::ChangeRow>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logs: Option<Vec<logs::LogRow>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    functions: Option<Vec<dc_core::fun_watch::FunctionLogRow>>,
    /// With `--metrics`: the stored snapshot, or null when the run made no request.
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics: Option<serde_json::Value>,
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

fn counts<K: std::fmt::Display>(m: &std::collections::BTreeMap<K, u64>) -> String {
    if m.is_empty() {
        return "-".into();
    }
    m.iter().map(|(k, n)| format!("{k}×{n}")).collect::<Vec<_>>().join(" ")
}

fn ms(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1} ms")).unwrap_or_else(|| "-".into())
}

/// Prints a run's request metrics for humans.
fn print_metrics(m: &dc_net::MetricsSnapshot) {
    let t = &m.total;
    println!(
        "requests   {} ({} attempts, {} retries), {} received",
        t.requests,
        t.attempts,
        t.retries,
        bytes(t.bytes_received)
    );
    println!("status     {}", counts(&t.status));
    let errors: std::collections::BTreeMap<&str, u64> = t.errors.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    println!("errors     {}", counts(&errors));
    if let Some(l) = &t.latency {
        println!(
            "latency    p50 {}  p95 {}  p99 {}  (min {}, max {}, {} attempts)",
            ms(Some(l.p50_ms)),
            ms(Some(l.p95_ms)),
            ms(Some(l.p99_ms)),
            ms(Some(l.min_ms)),
            ms(Some(l.max_ms)),
            l.count
        );
    }
    for (title, by) in [("DOMAIN", &m.domains), ("PROXY", &m.proxies)] {
        if by.is_empty() {
            continue;
        }
        let rows: Vec<Vec<String>> = by
            .iter()
            .map(|(name, s)| {
                let errors: std::collections::BTreeMap<&str, u64> =
                    s.errors.iter().map(|(k, v)| (k.as_str(), *v)).collect();
                let l = s.latency.as_ref();
                vec![
                    name.clone(),
                    s.requests.to_string(),
                    s.retries.to_string(),
                    counts(&s.status),
                    counts(&errors),
                    bytes(s.bytes_received),
                    ms(l.map(|l| l.p50_ms)),
                    ms(l.map(|l| l.p95_ms)),
                    ms(l.map(|l| l.p99_ms)),
                    if s.circuit_opened > 0 { format!("opened {}×", s.circuit_opened) } else { "-".into() },
                ]
            })
            .collect();
        println!();
        output::table(
            &[title, "REQUESTS", "RETRIES", "STATUS", "ERRORS", "RECEIVED", "P50", "P95", "P99", "CIRCUIT"],
            &rows,
        );
    }
}

pub async fn exec(c: RunsCommand, env: &HostEnv) -> anyhow::Result<ExitCode> {
    match c {
        RunsCommand::List { app, limit, json } => {
            let app_id = match app {
                Some(a) => Some(apps::resolve_app(&env.db, &a).await?.app_id),
                None => None,
            };
            let list = runs::list(&env.db, app_id.as_ref(), limit).await?;
            if json {
                output::json(&list)?;
            } else if list.is_empty() {
                println!("no runs yet; start one with `dc-host run APP`");
            } else {
                let names: std::collections::HashMap<dc_core::AppId, String> =
                    apps::list_apps(&env.db).await?.into_iter().map(|a| (a.app_id.clone(), a.path())).collect();
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|r| {
                        vec![
                            r.runtime_id.to_string(),
                            names.get(&r.app_id).cloned().unwrap_or_else(|| output::short(&r.app_id)),
                            r.plugin_version.clone(),
                            r.status.clone(),
                            output::ts(Some(r.created_at)),
                            duration(r),
                            format!("{}/{}", r.current_count, r.total_count),
                            format!("+{} ~{} -{}", r.inserted, r.updated, r.deleted),
                        ]
                    })
                    .collect();
                output::table(&["RUNTIME ID", "APP", "VERSION", "STATUS", "CREATED", "TOOK", "ITEMS", "ROWS"], &rows);
            }
        }
        RunsCommand::Show { runtime_id, changes, logs: with_logs, functions, metrics, json } => {
            let r = runs::get(&env.db, &runtime_id).await?;
            let feed = if changes { Some(runs::changes(&env.db, &r.runtime_id).await?) } else { None };
            let log_rows = if with_logs { Some(logs::for_run(&env.db, &r.runtime_id, 10_000).await?) } else { None };
            let calls = if functions {
                Some(dc_core::fun_watch::function_log_for_run(&env.db, &r.runtime_id).await?)
            } else {
                None
            };
            let metrics = if metrics {
                Some(runs::metrics(&env.db, &r.runtime_id).await?.unwrap_or(serde_json::Value::Null))
            } else {
                None
            };
            let resume = resume_state(env, &r).await?;
            if json {
                output::json(&RunDetail { run: &r, resume, changes: feed, logs: log_rows, functions: calls, metrics })?;
            } else {
                let app =
                    apps::get_app(&env.db, &r.app_id).await?.map(|a| a.path()).unwrap_or_else(|| r.app_id.to_string());
                print_run(&r, &app);
                if let Some(by) = &resume.resumed_by {
                    println!("continued  by run {by} (--resume)");
                } else if resume.resumable {
                    let i = resume.items;
                    println!(
                        "resumable  {} items done, {} to collect, {} failed (tried again): `dc-host run {app} --resume {}`",
                        i.done, i.pending, i.failed, r.runtime_id
                    );
                }
                if let Some(feed) = feed {
                    println!("changes    {} keys", feed.len());
                    for c in feed {
                        println!("  {:<6} {} {}", c.op, c.table_name, c.row_key);
                    }
                }
                if let Some(calls) = calls {
                    println!("functions  {} calls", calls.len());
                    for c in calls {
                        let err = c.error_msg.map(|e| format!(" error: {e}")).unwrap_or_default();
                        println!(
                            "  {}::{} {:.1} ms {} rows [{}]{err}",
                            c.module_path, c.function_name, c.elapsed_ms, c.rows_count, c.thread_name
                        );
                    }
                }
                if r.dropped_logs > 0 {
                    println!(
                        "dropped    {} log records: the log buffer was full (raise logging.buffer, or log less)",
                        r.dropped_logs
                    );
                }
                match metrics {
                    None => {}
                    Some(serde_json::Value::Null) => {
                        println!("requests   none recorded (the run made no HTTP request)")
                    }
                    Some(doc) => print_metrics(&dc_net::MetricsSnapshot::from_json(doc).map_err(anyhow::Error::msg)?),
                }
                if let Some(rows) = log_rows {
                    println!("logs       {} records", rows.len());
                    for l in rows {
                        println!(
                            "  {} {:<5} {} {} {}",
                            l.ts.format("%H:%M:%S%.3f"),
                            l.level,
                            l.target,
                            l.message,
                            l.context.0
                        );
                    }
                }
            }
        }
        RunsCommand::Stop { runtime_id } => match dc_runtime::stop::stop_run(env, &runtime_id).await? {
            StopOutcome::Orphaned(r) => {
                eprintln!(
                    "run {} has no live worker, so nothing can stop it; it was marked {}: {}",
                    r.runtime_id,
                    r.status,
                    r.reason.as_deref().unwrap_or_default()
                );
                return Ok(ExitCode::from(1));
            }
            StopOutcome::StoppedBeforeStart(r) => println!("run {} had not started; it is STOPPED", r.runtime_id),
            StopOutcome::Requested { run, remote: Some(host) } => println!(
                "stop requested for {} (its worker runs on {host}; it stops at the next item if that host is up)",
                run.runtime_id
            ),
            StopOutcome::Requested { run, remote: None } => {
                println!("stop requested for {}; the worker stops at the next item", run.runtime_id)
            }
            StopOutcome::NotRunning(r) => {
                eprintln!("run {} is not running (status {})", r.runtime_id, r.status);
                return Ok(ExitCode::from(1));
            }
        },
        RunsCommand::Purge { older_than_days, json } => {
            if older_than_days == 0 {
                anyhow::bail!("--older-than-days 0 would delete every ended run; give at least 1");
            }
            let cutoff = chrono::Utc::now() - chrono::TimeDelta::days(i64::from(older_than_days));
            let purged = dc_core::retention::purge(&env.db, cutoff, 10_000).await?;
            if json {
                output::json(&purged)?;
            } else {
                println!(
                    "deleted {} runs, {} change-feed entries, {} log records and {} function calls older than {older_than_days} days",
                    purged.runs, purged.changes, purged.logs, purged.function_calls
                );
            }
        }
        RunsCommand::Reap { json } => {
            let reaped = dc_runtime::reap::reap_orphans(env).await?;
            if json {
                output::json(&reaped)?;
            } else if reaped.is_empty() {
                println!("no orphaned runs on {}", env.settings.host_name());
            } else {
                for r in &reaped {
                    println!("{} FAILED: {}", r.runtime_id, r.reason.as_deref().unwrap_or_default());
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
