//! Start-up shared by `dc-host` and `dc-worker`: connecting the database
//! (with the schema check that fits the command) and installing console,
//! database and Splunk logging, whose sinks are flushed before the process exits.

use dc_core::{Database, Settings};
use dc_runtime::HostEnv;
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// lapin logs every closed channel and dropped connection as an error; dc-broker
/// reports them itself, naming the broker and what happens next.
pub const QUIET: &str = "sqlx=warn,lapin=off";

/// What the database and Splunk sinks take besides their level: every event,
/// and only the spans that carry a run's ids (the only span fields they
/// read). Other spans — the REST API opens one per request — are then not
/// created at all unless the console's level asks for them.
fn sink_interest(meta: &tracing::Metadata<'_>) -> bool {
    meta.is_event() || meta.fields().field("app_id").is_some() || meta.fields().field("runtime_id").is_some()
}

/// The console's filter: `DC_LOG` when set, else `default` (with [`QUIET`]).
pub fn console_filter(default: &str) -> EnvFilter {
    EnvFilter::try_from_env("DC_LOG").unwrap_or_else(|_| EnvFilter::new(format!("{default},{QUIET}")))
}

/// The console's layer: stderr (colours on a terminal), [`console_filter`] at `warn`.
fn console_layer<S>() -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(console_filter("warn"))
}

/// Console logging only (commands that need no database).
pub fn init_console_logging() {
    let _ = tracing_subscriber::registry().with(console_layer()).try_init();
}

/// The log sinks to flush before exiting (database and/or Splunk).
pub struct LogSinks(Vec<dc_core::logs::LogSink>);

impl LogSinks {
    /// Writes everything buffered so far in every sink and stops their
    /// writers, before the runtime they write through shuts down.
    pub fn close(&self) {
        for sink in &self.0 {
            sink.close();
        }
    }

    /// Records dropped by the busiest sink because its buffer was full.
    pub fn dropped(&self) -> u64 {
        self.0.iter().map(dc_core::logs::LogSink::dropped).max().unwrap_or(0)
    }
}

/// What connecting does about the schema.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// Refuse a schema this build does not use (migrating only an empty embedded database).
    Check,
    /// Apply pending migrations (`db deploy`).
    Migrate,
    /// Trust the caller: a worker's supervisor checked before starting it; the
    /// connection opens in the background (see `Database::connect_lazy`).
    Trusted,
}

/// Connects the database (checking or migrating its schema, see [`Schema`])
/// and installs console, database and (when `logging.splunk_url` is set)
/// Splunk logging. `exe` is the `dc-host` program (see [`HostEnv::exe`]).
pub fn connect(
    rt: &tokio::runtime::Runtime,
    settings: Settings,
    schema: Schema,
    exe: std::path::PathBuf,
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
    let _ = tracing_subscriber::registry().with(console_layer()).with(db_layer).with(splunk_layer).try_init();
    Ok((HostEnv { settings, db, exe }, (!sinks.is_empty()).then_some(LogSinks(sinks))))
}
