//! `dc-host apps`: each app's schedule, next run, stored arguments and state,
//! and the commands that set the schedule and the arguments scheduled and
//! commanded runs use.

use std::process::ExitCode;

use chrono::Utc;
use clap::Subcommand;
use dc_core::apps::{self, AppRow};
use dc_core::enums::CmdName;
use dc_runtime::HostEnv;
use dc_runtime::schedule::{self, ScheduleSpec};
use serde::Serialize;

use crate::output;

/// App commands.
#[derive(Subcommand)]
pub enum AppsCommand {
    /// Every app with its schedule, next run and state.
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// One app: schedule, next run, stored arguments, state.
    Show {
        /// App id, id prefix or group/parent/name.
        app: String,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Set when the app runs by itself: a cron expression (crontab(5), in a
    /// time zone), a fixed interval, or off. Kept across plugin versions.
    Schedule {
        /// App id, id prefix or group/parent/name.
        app: String,
        /// A cron expression: 5 fields (or 6 with leading seconds), names, ranges, steps, @daily…
        #[arg(long, group = "how", value_name = "EXPR")]
        cron: Option<String>,
        /// The cron expression's time zone (IANA name, e.g. Europe/Berlin; default UTC).
        #[arg(long, requires = "cron", value_name = "ZONE")]
        tz: Option<String>,
        /// A fixed interval: 30s, 5m, 1h, 2h30m, 1d (counted from now, without drift).
        #[arg(long, group = "how", value_name = "DURATION")]
        every: Option<String>,
        /// No schedule: the app runs only when started.
        #[arg(long, group = "how")]
        off: bool,
    },
    /// Start a run now (through `dc-host serve`; queued until one serves).
    Start {
        /// App id, id prefix or group/parent/name.
        app: String,
    },
    /// Stop the app's running runs (the plugin is asked first, then killed after the grace period).
    Stop {
        /// App id, id prefix or group/parent/name.
        app: String,
    },
    /// Stop the app's run, then start it again.
    Restart {
        /// App id, id prefix or group/parent/name.
        app: String,
    },
    /// Let the app run on its schedule again.
    Enable {
        /// App id, id prefix or group/parent/name.
        app: String,
    },
    /// Keep the app from running on its schedule (commands still start it).
    Disable {
        /// App id, id prefix or group/parent/name.
        app: String,
    },
    /// Set how many runs of the app may go on at once (default 1: never twice at once).
    Concurrency {
        /// App id, id prefix or group/parent/name.
        app: String,
        /// Runs at once, 1 to 1000.
        #[arg(value_parser = clap::value_parser!(i64).range(1..=1000))]
        runs: i64,
    },
    /// Store the runtime arguments (a JSON object) scheduled and commanded runs
    /// use, checked against the plugin's args_schema.
    Args {
        /// App id, id prefix or group/parent/name.
        app: String,
        /// The arguments as a JSON object.
        #[arg(value_name = "JSON", required_unless_present = "clear")]
        json_args: Option<String>,
        /// Remove the stored arguments.
        #[arg(long, conflicts_with = "json_args")]
        clear: bool,
    },
    /// Delete an app: its schedule, arguments, registered versions and finished
    /// runs, in one transaction; refused while a run of it is active. Its data
    /// tables stay unless --drop-data; plugin store files stay. Remove its file
    /// from the plugins directory first, or the next reload registers it again.
    Rm {
        /// App id, id prefix or group/parent/name.
        app: String,
        /// Also drop the app's data tables (the collected rows are lost).
        #[arg(long)]
        drop_data: bool,
        /// Confirm the deletion (without it, nothing is deleted).
        #[arg(long)]
        yes: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

/// An app as `apps list|show --json` prints it.
#[derive(Serialize)]
struct AppView {
    app_id: dc_core::AppId,
    app: String,
    enabled: bool,
    active_version: Option<String>,
    schedule: Option<String>,
    schedule_origin: String,
    next_run: Option<String>,
    args: Option<serde_json::Value>,
    run_status: Option<String>,
    last_run: Option<String>,
    fail_count: i64,
    max_concurrent_runs: i64,
}

fn describe_schedule(a: &AppRow) -> Option<String> {
    match (&a.schedule_cron, a.interval_secs) {
        (Some(c), _) => Some(format!("cron {c:?} ({})", a.schedule_tz.as_deref().unwrap_or("UTC"))),
        (None, Some(s)) => Some(format!("every {s}s")),
        (None, None) => None,
    }
}

fn view(a: &AppRow) -> anyhow::Result<AppView> {
    // the stored next run, or (for a plugin's default schedule nobody has
    // planned yet) the next fire time from now
    let next = match a.next_run {
        Some(t) => Some(t),
        None => schedule::next_run(a, Utc::now())?,
    };
    Ok(AppView {
        app_id: a.app_id.clone(),
        app: a.path(),
        enabled: a.enabled,
        active_version: a.active_version.clone(),
        schedule: describe_schedule(a),
        schedule_origin: a.schedule_origin.clone(),
        next_run: next.map(|t| t.to_rfc3339()),
        args: schedule::stored_args(a)?,
        run_status: a.run_status.clone(),
        last_run: a.last_run.map(|t| t.to_rfc3339()),
        fail_count: a.fail_count,
        max_concurrent_runs: a.max_concurrent_runs,
    })
}

fn print_one(v: &AppView) {
    println!("{} ({})", v.app, output::short(&v.app_id));
    println!("version    {}", v.active_version.as_deref().unwrap_or("-"));
    println!("enabled    {}", v.enabled);
    println!("schedule   {} (set by {})", v.schedule.as_deref().unwrap_or("off"), v.schedule_origin);
    println!("next run   {}", v.next_run.as_deref().unwrap_or("-"));
    println!("args       {}", v.args.as_ref().map(|a| a.to_string()).unwrap_or_else(|| "-".into()));
    println!("last run   {} {}", v.last_run.as_deref().unwrap_or("-"), v.run_status.as_deref().unwrap_or(""));
    println!("failures   {} in a row", v.fail_count);
    println!("at once    {} run(s)", v.max_concurrent_runs);
}

/// Who asks, for command messages: `user@host`.
fn requested_by(env: &HostEnv) -> String {
    let user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into());
    format!("{user}@{}", env.settings.host_name())
}

/// Queues a command for `dc-host serve` (the database path: it works whether
/// or not a host serves right now), then, with a broker configured, publishes
/// it so a serving host acts at once. A failed publish is a warning: the
/// queued command stands and a host picks it up on its next tick.
async fn queue(env: &HostEnv, app: &str, cmd: CmdName) -> anyhow::Result<()> {
    let row = apps::resolve_app(&env.db, app).await?;
    apps::queue_command(&env.db, &row.app_id, cmd).await?;
    if let Some(broker) = dc_broker::Broker::from_settings(&env.settings.broker) {
        let msg = dc_broker::CommandMessage::new(&row.app_id, cmd, &requested_by(env), true);
        if let Err(e) = broker.publish(&msg).await {
            eprintln!(
                "warning: {e}. The command is queued in the database all the same: a serving host picks it up on its next tick. \
                 Fix broker.url (or DC_BROKER_URL), or unset it to use the database only"
            );
        }
    }
    let serving = dc_core::hosts::list(&env.db).await?.into_iter().filter(|h| h.state == "SERVING").count();
    let note = if serving > 0 {
        format!("{serving} serving host(s) will pick it up")
    } else {
        "no host is serving: it waits for `dc-host serve`".to_string()
    };
    println!("{}: {} queued; {note}", row.path(), cmd.as_str());
    Ok(())
}

pub async fn exec(c: AppsCommand, env: &HostEnv) -> anyhow::Result<ExitCode> {
    match c {
        AppsCommand::List { json } => {
            let views = apps::list_apps(&env.db).await?.iter().map(view).collect::<anyhow::Result<Vec<_>>>()?;
            if json {
                output::json(&views)?;
            } else {
                let rows: Vec<Vec<String>> = views
                    .iter()
                    .map(|v| {
                        vec![
                            v.app.clone(),
                            v.active_version.clone().unwrap_or_else(|| "-".into()),
                            v.schedule.clone().unwrap_or_else(|| "off".into()),
                            v.next_run.clone().unwrap_or_else(|| "-".into()),
                            v.run_status.clone().unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect();
                output::table(&["APP", "VERSION", "SCHEDULE", "NEXT RUN", "LAST STATUS"], &rows);
            }
        }
        AppsCommand::Show { app, json } => {
            let v = view(&apps::resolve_app(&env.db, &app).await?)?;
            if json {
                output::json(&v)?;
            } else {
                print_one(&v);
            }
        }
        AppsCommand::Schedule { app, cron, tz, every, off } => {
            let spec = match (cron, every, off) {
                (Some(expr), _, _) => ScheduleSpec::Cron { expr, tz },
                (None, Some(period), _) => ScheduleSpec::Every(period),
                (None, None, true) => ScheduleSpec::Off,
                _ => anyhow::bail!("say how the app should run: --cron EXPR [--tz ZONE], --every DURATION or --off"),
            };
            let (row, next) = schedule::set_schedule(env, &app, &spec, Utc::now()).await?;
            match next {
                Some(t) => println!(
                    "{}: {}; next run {}",
                    row.path(),
                    describe_schedule(&row).unwrap_or_default(),
                    t.to_rfc3339()
                ),
                None => println!("{}: no schedule; it runs only when started", row.path()),
            }
        }
        AppsCommand::Start { app } => queue(env, &app, CmdName::Start).await?,
        AppsCommand::Stop { app } => queue(env, &app, CmdName::Stop).await?,
        AppsCommand::Restart { app } => queue(env, &app, CmdName::Restart).await?,
        AppsCommand::Enable { app } => queue(env, &app, CmdName::Enable).await?,
        AppsCommand::Disable { app } => queue(env, &app, CmdName::Disable).await?,
        AppsCommand::Concurrency { app, runs } => {
            let row = apps::resolve_app(&env.db, &app).await?;
            apps::set_max_concurrent_runs(&env.db, &row.app_id, runs).await?;
            let how = if runs == 1 {
                "never runs twice at once".to_string()
            } else {
                format!("runs up to {runs} times at once")
            };
            println!("{}: {how} (serve also caps the runs of one host: runs.max_runs_per_host)", row.path());
        }
        AppsCommand::Args { app, json_args, clear } => {
            let value = match (json_args, clear) {
                (_, true) => None,
                (Some(text), false) => Some(serde_json::from_str::<serde_json::Value>(&text).map_err(|e| {
                    anyhow::anyhow!(
                        "the arguments are not valid JSON ({e}); pass an object like '{{\"max_pages\": 3}}'"
                    )
                })?),
                (None, false) => anyhow::bail!("give the arguments as a JSON object, or --clear"),
            };
            let row = schedule::set_args(env, &app, value.as_ref()).await?;
            match &row.run_args {
                Some(a) => println!("{}: scheduled and commanded runs use {a}", row.path()),
                None => println!("{}: no stored arguments", row.path()),
            }
        }
        AppsCommand::Rm { app, drop_data, yes, json } => {
            let row = apps::resolve_app(&env.db, &app).await?;
            if !yes {
                let data = if drop_data { "and DROPS its data tables" } else { "and keeps its data tables" };
                anyhow::bail!(
                    "deleting {} removes its schedule, arguments, registered versions and run history {data}; \
                     run again with --yes to confirm",
                    row.path()
                );
            }
            let gone = apps::delete_app(&env.db, &row.app_id, drop_data).await?;
            if json {
                output::json(&gone)?;
            } else {
                println!(
                    "{}: deleted ({} version(s), {} run(s)); plugin store files stay",
                    gone.path, gone.versions, gone.runs
                );
                if !gone.dropped_tables.is_empty() {
                    println!("dropped tables: {}", gone.dropped_tables.join(", "));
                }
                if !gone.left_shared_tables.is_empty() {
                    println!(
                        "shared tables left to the other apps that write into them (only {}'s rows deleted): {}",
                        gone.path,
                        gone.left_shared_tables.join(", ")
                    );
                }
                if !gone.kept_tables.is_empty() {
                    println!(
                        "kept tables: {} (still reserved for {}: registering it again takes them back)",
                        gone.kept_tables.join(", "),
                        gone.path
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
