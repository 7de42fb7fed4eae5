//! `dc-host`: the host process and operator CLI. Parses the command line, loads
//! settings, connects the database and logging, and dispatches to one module per
//! subcommand under `cmd/`. `anyhow` is used only here, at the binary's edge.

mod cmd;
mod output;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use dc_core::{Database, Settings};
use dc_runtime::HostEnv;
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// dc-host runs data-collection plugins: register plugin files, run them in
/// isolated worker processes, and keep their rows in SQLite or PostgreSQL.
#[derive(Parser)]
#[command(name = "dc-host", version, about, long_about = None)]
struct Cli {
    /// Configuration file (TOML); also `DC_CONFIG`. Settings can be overridden
    /// with `DC_<SECTION>_<KEY>` variables, e.g. `DC_DATABASE_URL`.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Database: migrate, status, deploy, seed, drop.
    #[command(subcommand)]
    Db(cmd::db::DbCommand),
    /// Show the effective configuration (secrets redacted).
    #[command(subcommand)]
    Config(cmd::config::ConfigCommand),
    /// Plugins: list, inspect, register, history, rollback.
    #[command(subcommand)]
    Plugins(cmd::plugins::PluginsCommand),
    /// Register new or changed plugin files from the plugins directory.
    Reload(cmd::reload::ReloadArgs),
    /// Run an app now, in its own worker process, and wait for it.
    Run(cmd::run::RunArgs),
    /// Apps: schedule, next run, stored arguments, state.
    #[command(subcommand)]
    Apps(cmd::apps::AppsCommand),
    /// The manager: start apps on their schedules and on commands, until SIGTERM/Ctrl-C.
    Serve(cmd::serve::ServeArgs),
    /// RabbitMQ for operator commands: check the connection, queues and consumers.
    #[command(subcommand)]
    Broker(cmd::broker::BrokerCommand),
    /// Hosts serving this database, with their heartbeats.
    #[command(subcommand)]
    Hosts(cmd::hosts::HostsCommand),
    /// Check a cron expression: its next fire times.
    #[command(subcommand)]
    Schedule(cmd::schedule::ScheduleCommand),
    /// Runs: list, show, stop.
    #[command(subcommand)]
    Runs(cmd::runs::RunsCommand),
    /// Collected data: tables and rows.
    #[command(subcommand)]
    Data(cmd::data::DataCommand),
    /// Generate a new plugin crate from the SDK template.
    ScaffoldPlugin(cmd::scaffold::ScaffoldArgs),
    /// Encrypted secrets: set, get, list, rm, rotate-key.
    #[command(subcommand)]
    Secrets(cmd::secrets::SecretsCommand),
    /// Control-plane users (people; password grant): add, list, passwd, rm.
    #[command(subcommand)]
    Users(cmd::users::UsersCommand),
    /// Control-plane clients (services; client-credentials grant): add, list, rm.
    #[command(subcommand)]
    Clients(cmd::clients::ClientsCommand),
    /// The control plane's audit log: list.
    #[command(subcommand)]
    Audit(cmd::audit::AuditCommand),
    /// The token authority's signing keys: rotate-key.
    #[command(subcommand)]
    Auth(cmd::auth::AuthCommand),
    /// The plugin interface this host implements: version, loadable range, capabilities.
    Interface(cmd::interface::InterfaceArgs),
    /// Internal: run one run (started by the supervisor; settings and run on stdin).
    #[command(hide = true)]
    Worker {
        /// The run to execute (its full id).
        #[arg(long, value_parser = dc_core::RuntimeId::parse)]
        runtime_id: dc_core::RuntimeId,
        /// The run's time limit; the worker ends the run itself a little after
        /// it if its supervisor has not.
        #[arg(long)]
        time_limit_ms: Option<u64>,
    },
    /// Internal: load a plugin file and print its manifest as JSON.
    #[command(hide = true)]
    PluginProbe {
        /// The plugin file.
        file: PathBuf,
    },
}

/// lapin logs every closed channel and dropped connection as an error; dc-broker
/// reports them itself, naming the broker and what happens next.
const QUIET: &str = "sqlx=warn,lapin=off";

/// What the database and Splunk sinks take besides their level: every event,
/// and only the spans that carry a run's ids (the only span fields they
/// read). Other spans — the REST API opens one per request — are then not
/// created at all unless the console's level asks for them.
fn sink_interest(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_event() || meta.fields().field("app_id").is_some() || meta.fields().field("runtime_id").is_some()
}

fn console_filter(default: &str) -> EnvFilter {
    EnvFilter::try_from_env("DC_LOG").unwrap_or_else(|_| EnvFilter::new(format!("{default},{QUIET}")))
}

fn init_console_logging() {
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter(console_filter("warn")),
        )
        .try_init();
}

/// The log sinks to flush before exiting (database and/or Splunk).
struct LogSinks(Vec<dc_core::logs::LogSink>);

impl LogSinks {
    /// Writes everything buffered so far in every sink and stops their
    /// writers, before the runtime they write through shuts down.
    fn close(&self) {
        for sink in &self.0 {
            sink.close();
        }
    }

    /// Records dropped by the busiest sink because its buffer was full.
    fn dropped(&self) -> u64 {
        self.0.iter().map(dc_core::logs::LogSink::dropped).max().unwrap_or(0)
    }
}

/// Connects the database (migrating it) and installs console, database and
/// (when `logging.splunk_url` is set) Splunk logging.
/// What connecting does about the schema.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Schema {
    /// Refuse a schema this build does not use (migrating only an empty embedded database).
    Check,
    /// Apply pending migrations (`db deploy`).
    Migrate,
    /// Trust the caller: a worker's supervisor checked before starting it; the
    /// connection opens in the background (see `Database::connect_lazy`).
    Trusted,
}

fn connect(
    rt: &tokio::runtime::Runtime,
    settings: Settings,
    schema: Schema,
) -> anyhow::Result<(HostEnv, Option<LogSinks>)> {
    let db = rt.block_on(async {
        let db = match schema {
            // the worker connects while it loads its plugin (`worker::run`)
            Schema::Trusted => Database::connect_lazy(&settings)?,
            _ => Database::connect(&settings).await?,
        };
        match schema {
            Schema::Check => db.ensure_schema(&dc_core::settings::redact_url(&settings.database_url())).await?,
            Schema::Migrate => {
                db.migrate().await?;
            }
            Schema::Trusted => {}
        }
        anyhow::Ok(db)
    })?;
    let level: tracing::Level = settings.logging.level.parse().unwrap_or(tracing::Level::INFO);
    // generic in the subscriber: each sink sits at its own place in the stack
    fn sink_filter<S>(level: tracing::Level) -> impl tracing_subscriber::layer::Filter<S>
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        EnvFilter::new(format!("{level},{QUIET}")).and(filter_fn(sink_interest))
    }
    let mut sinks = Vec::new();
    let db_layer = if settings.logging.database {
        let (layer, sink) = dc_core::logs::start_db_sink(
            db.clone(),
            rt.handle().clone(),
            settings.logging.buffer,
            settings.fallback_log_file(),
        );
        sinks.push(sink);
        Some(layer.with_filter(sink_filter(level)))
    } else {
        None
    };
    let splunk_layer = match &settings.logging.splunk_url {
        Some(url) => {
            let (layer, sink) = dc_core::splunk::start_hec_sink(
                url,
                settings.logging.splunk_token.as_deref().unwrap_or_default(),
                &settings.host_name(),
                rt.handle().clone(),
                settings.logging.buffer,
                settings.fallback_log_file(),
            );
            sinks.push(sink);
            Some(layer.with_filter(sink_filter(level)))
        }
        None => None,
    };
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter(console_filter("warn")),
        )
        .with(db_layer)
        .with(splunk_layer)
        .try_init();
    let exe = std::env::current_exe().context("cannot find the dc-host executable")?;
    Ok((HostEnv { settings, db, exe }, (!sinks.is_empty()).then_some(LogSinks(sinks))))
}

/// Reads the settings (file + `DC_*`), showing what loading noticed.
fn read_settings(cli_config: Option<&std::path::Path>) -> anyhow::Result<Settings> {
    let settings = Settings::from_env(cli_config)?;
    for w in &settings.warnings {
        eprintln!("warning: {w}");
    }
    Ok(settings)
}

/// Reads the settings and resolves their `${secret:…}` references.
fn load_settings(cli_config: Option<&std::path::Path>) -> anyhow::Result<Settings> {
    let mut settings = read_settings(cli_config)?;
    dc_core::secrets::resolve_setting_references(&mut settings)?;
    Ok(settings)
}

fn real_main() -> anyhow::Result<ExitCode> {
    // `--version` also names the plugin interface, so an operator can match plugins to hosts
    let version: &'static str = Box::leak(cmd::interface::version_text().into_boxed_str());
    let cli = Cli::from_arg_matches(&Cli::command().version(version).get_matches())?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    match cli.command {
        Command::PluginProbe { file } => Ok(ExitCode::from(dc_runtime::probe::probe_child_main(&file) as u8)),
        Command::Worker { runtime_id, time_limit_ms } => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .context("worker: cannot read its start (settings and run) from stdin")?;
            let start: dc_runtime::worker::WorkerStart =
                serde_json::from_str(&text).context("worker: the start on stdin (settings and run) is not valid")?;
            if start.run.runtime_id != runtime_id {
                anyhow::bail!("worker: started for run {runtime_id} but given run {} on stdin", start.run.runtime_id);
            }
            // the supervisor reads this line: the worker started
            eprintln!("{}", dc_runtime::worker::STARTED_LINE);
            let dc_runtime::worker::WorkerStart { settings, run, manifest, module_path } = start;
            let (env, sink) = connect(&rt, settings, Schema::Trusted)?;
            let limit = time_limit_ms.map(std::time::Duration::from_millis);
            let code = dc_runtime::worker::run(rt.handle(), &env, &run, &manifest, &module_path, limit);
            if let Some(s) = sink {
                s.close();
                // nothing is dropped in silence: the run records how many of its log records were lost
                let dropped = s.dropped();
                if dropped > 0
                    && let Err(e) = rt.block_on(dc_core::runs::set_dropped_logs(&env.db, &runtime_id, dropped))
                {
                    eprintln!("dc-host worker: {dropped} log records were dropped and that could not be recorded: {e}");
                }
            }
            Ok(ExitCode::from(code as u8))
        }
        Command::Config(c) => {
            init_console_logging();
            cmd::config::exec(c, &load_settings(cli.config.as_deref())?)
        }
        Command::Interface(a) => cmd::interface::exec(a, &read_settings(cli.config.as_deref())?),
        // previewing a schedule needs no database
        Command::Schedule(c) => {
            init_console_logging();
            cmd::schedule::exec(c)
        }
        // the secrets store needs no database, and its commands never resolve
        // `${secret:…}` references (so `secrets set pg_password` works while the
        // database URL refers to it)
        Command::Secrets(c) => {
            init_console_logging();
            cmd::secrets::exec(c, &read_settings(cli.config.as_deref())?)
        }
        // checking the broker needs no database
        Command::Broker(c) => {
            init_console_logging();
            rt.block_on(cmd::broker::exec(c, &load_settings(cli.config.as_deref())?))
        }
        // scaffolding writes files only
        Command::ScaffoldPlugin(a) => {
            init_console_logging();
            cmd::scaffold::exec(a, &read_settings(cli.config.as_deref())?)
        }
        command => {
            let mut settings = load_settings(cli.config.as_deref())?;
            // a run (and its worker, which gets these settings) waits for SQLite's
            // write lock as long as the run may last, instead of failing with
            // "database is locked" while another run commits a large merge
            let run_limit = match &command {
                Command::Run(a) => Some(a.time_limit().unwrap_or(settings.runs.time_limit_secs)),
                Command::Serve(_) => Some(settings.runs.time_limit_secs),
                _ => None,
            };
            if let Some(limit) = run_limit {
                let limit = limit + settings.runs.stop_grace_secs;
                settings.database.busy_timeout_secs = settings.database.busy_timeout_secs.max(limit);
            }
            if let Command::Db(c) = &command
                && c.skips_auto_migrate()
            {
                init_console_logging();
                return rt.block_on(cmd::db::exec_raw(c, &settings));
            }
            let schema = match &command {
                Command::Db(cmd::db::DbCommand::Deploy) => Schema::Migrate,
                _ => Schema::Check,
            };
            let (env, sink) = connect(&rt, settings, schema)?;
            let result = match command {
                Command::Db(c) => rt.block_on(cmd::db::exec(c, &env)),
                Command::Plugins(c) => rt.block_on(cmd::plugins::exec(c, &env)),
                Command::Reload(a) => rt.block_on(cmd::reload::exec(a, &env)),
                Command::Run(a) => rt.block_on(cmd::run::exec(a, &env)),
                Command::Runs(c) => rt.block_on(cmd::runs::exec(c, &env)),
                Command::Apps(c) => rt.block_on(cmd::apps::exec(c, &env)),
                Command::Serve(a) => rt.block_on(cmd::serve::exec(a, &env)),
                Command::Hosts(c) => rt.block_on(cmd::hosts::exec(c, &env)),
                Command::Data(c) => rt.block_on(cmd::data::exec(c, &env)),
                Command::Users(c) => rt.block_on(cmd::users::exec(c, &env)),
                Command::Clients(c) => rt.block_on(cmd::clients::exec(c, &env)),
                Command::Auth(c) => rt.block_on(cmd::auth::exec(c, &env)),
                Command::Audit(c) => rt.block_on(cmd::audit::exec(c, &env)),
                _ => unreachable!("handled above"),
            };
            if let Some(s) = sink {
                s.close();
            }
            rt.block_on(env.db.close());
            result
        }
    }
}

/// A user-facing command whose output is piped into `head` (or any reader that
/// quits early) should end quietly, as Unix tools do: restore the default
/// SIGPIPE action, which Rust's runtime sets to "ignore" (turning the closed
/// pipe into a panic in `println!`). Worker and probe processes keep ignoring
/// it: their stderr goes to a supervisor that may die before them, and they
/// must still record how their run ended.
#[allow(unsafe_code)]
fn quiet_on_closed_pipe() {
    // SAFETY: signal(2) with SIG_DFL installs no handler code of ours.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    let internal = std::env::args().nth(1).is_some_and(|a| a == "worker" || a == "plugin-probe");
    if !internal {
        quiet_on_closed_pipe();
    }
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            // our error messages already embed their cause; add only causes not yet said
            let mut msg = e.to_string();
            for cause in e.chain().skip(1) {
                let c = cause.to_string();
                if !msg.contains(&c) {
                    msg.push_str(": ");
                    msg.push_str(&c);
                }
            }
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
    }
}
