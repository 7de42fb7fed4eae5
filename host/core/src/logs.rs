//! Logging into the database: a `tracing` layer that hands records to a bounded
//! buffer (never blocking the caller; overflow is counted, not waited on) and a
//! writer thread that inserts them in batches into `logs`. When the database is
//! down, batches go to a fallback JSONL file instead, so nothing is lost
//! silently. Records inside a span carrying `app_id` / `runtime_id` fields (one
//! span per run) are stamped with them; every other field becomes JSON context.
//!
//! The layer, the buffer, the batching writer loop and the fallback file are
//! shared with the other sinks (`crate::splunk`): a sink supplies only its name,
//! which targets it must skip, and how to write one batch.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber, span};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::db::{Database, DbError};
use crate::ids::{AppId, RuntimeId};
use crate::on_pool;

/// One log record as stored.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct LogRow {
    /// When.
    pub ts: DateTime<Utc>,
    /// TRACE .. ERROR.
    pub level: String,
    /// Module or plugin that logged it.
    pub target: String,
    /// Message.
    pub message: String,
    /// App, if inside a run.
    pub app_id: Option<AppId>,
    /// Run, if inside a run.
    pub runtime_id: Option<RuntimeId>,
    /// Structured context (JSON object text).
    pub context: sqlx::types::Json<Value>,
}

enum Msg {
    Record(LogRow),
    Flush(std::sync::mpsc::Sender<()>),
    /// Write what is buffered, acknowledge, and end the writer thread.
    Close(std::sync::mpsc::Sender<()>),
}

/// A `tracing` layer feeding a sink's bounded buffer: it never blocks, and
/// counts what does not fit.
pub struct SinkLayer {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
    /// Targets this sink must not record (its own machinery, to avoid loops).
    skip: fn(&str) -> bool,
}

/// The `tracing` layer feeding the database sink.
pub type DbLogLayer = SinkLayer;

/// Control of the sink's writer thread.
#[derive(Clone)]
pub struct LogSink {
    tx: SyncSender<Msg>,
    dropped: Arc<AtomicU64>,
}

impl LogSink {
    /// Writes everything buffered and stops the writer thread (waits up to
    /// 10 s). Call it before the runtime the sink writes through shuts down:
    /// a writer still running then would find its runtime gone. Records that
    /// arrive later are counted as dropped.
    pub fn close(&self) {
        let (ack_tx, ack_rx) = std::sync::mpsc::channel();
        if self.tx.send(Msg::Close(ack_tx)).is_ok() {
            let _ = ack_rx.recv_timeout(Duration::from_secs(10));
        }
    }

    /// Writes everything buffered so far (waits up to 10 s).
    pub fn flush(&self) {
        let (ack_tx, ack_rx) = std::sync::mpsc::channel();
        if self.tx.send(Msg::Flush(ack_tx)).is_ok() {
            let _ = ack_rx.recv_timeout(Duration::from_secs(10));
        }
    }

    /// Records dropped because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

#[derive(Default, Clone)]
struct RunIds {
    app_id: Option<AppId>,
    runtime_id: Option<RuntimeId>,
}

#[derive(Default)]
struct Fields {
    message: String,
    ids: RunIds,
    context: Map<String, Value>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        let text = || match &value {
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        match field.name() {
            "message" => self.message = text(),
            "app_id" => self.ids.app_id = Some(text().into()),
            "runtime_id" => self.ids.runtime_id = Some(text().into()),
            // a plugin's JSON context arrives as one field and is spread out
            "context_json" => {
                if let Value::String(s) = &value
                    && let Ok(Value::Object(m)) = serde_json::from_str(s)
                {
                    self.context.extend(m);
                }
            }
            name => {
                self.context.insert(name.to_string(), value);
            }
        }
    }
}

impl<S> Layer<S> for SinkLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        // only a span naming a run's ids matters to records; others (one per
        // API request) are not worth formatting their fields for
        let fields = attrs.metadata().fields();
        if fields.field("app_id").is_none() && fields.field("runtime_id").is_none() {
            return;
        }
        let mut f = Fields::default();
        attrs.record(&mut f);
        if (f.ids.app_id.is_some() || f.ids.runtime_id.is_some())
            && let Some(span) = ctx.span(id)
        {
            // `replace`, not `insert`: every sink layer on the subscriber stores
            // the same ids on the same span, and `insert` panics on the second
            span.extensions_mut().replace(f.ids);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        // the sink's own machinery must not log into the sink
        if (self.skip)(meta.target()) {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(ids) = span.extensions().get::<RunIds>() {
                    f.ids.app_id = f.ids.app_id.or_else(|| ids.app_id.clone());
                    f.ids.runtime_id = f.ids.runtime_id.or_else(|| ids.runtime_id.clone());
                }
            }
        }
        let row = LogRow {
            ts: Utc::now(),
            level: meta.level().to_string(),
            target: meta.target().to_string(),
            message: f.message,
            app_id: f.ids.app_id,
            runtime_id: f.ids.runtime_id,
            context: sqlx::types::Json(Value::Object(f.context)),
        };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(Msg::Record(row)) {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Whether `target` is `krate` or one of its modules.
pub(crate) fn in_crate(target: &str, krate: &str) -> bool {
    target.strip_prefix(krate).is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
}

/// Starts the writer thread. `rt` is the runtime whose pool `db` belongs to.
pub fn start_db_sink(
    db: Database,
    rt: tokio::runtime::Handle,
    capacity: usize,
    fallback: PathBuf,
) -> (DbLogLayer, LogSink) {
    // the sink's own queries must not log into the sink
    let skip = |target: &str| in_crate(target, "sqlx");
    start_sink("database log sink", capacity, fallback, skip, move |rows| {
        rt.block_on(insert_batch(&db, rows)).map_err(|e| e.to_string())
    })
}

/// Starts a sink: a bounded buffer of `capacity` records, a layer feeding it
/// (skipping targets for which `skip` is true) and a writer thread that hands
/// batches to `write`; a batch `write` fails on goes to the `fallback` file,
/// with one line on stderr naming the sink (`name`) and the reason.
pub(crate) fn start_sink(
    name: &'static str,
    capacity: usize,
    fallback: PathBuf,
    skip: fn(&str) -> bool,
    write: impl FnMut(&[LogRow]) -> Result<(), String> + Send + 'static,
) -> (SinkLayer, LogSink) {
    let (tx, rx) = sync_channel(capacity);
    let dropped = Arc::new(AtomicU64::new(0));
    std::thread::Builder::new()
        .name("dc-log-sink".into())
        .spawn(move || writer(name, rx, fallback, write))
        .map(|_| ())
        .unwrap_or_else(|e| eprintln!("dc-host: cannot start the {name} writer ({e}); logs go to the console only"));
    (SinkLayer { tx: tx.clone(), dropped: dropped.clone(), skip }, LogSink { tx, dropped })
}

/// A batch is written when it holds this many records…
const BATCH_RECORDS: usize = 500;
/// …or when its oldest record has waited this long, whether or not new
/// records keep coming.
const MAX_WAIT: Duration = Duration::from_millis(250);

/// The writer's batch and when it is due. Time is passed in (`now`), so the
/// policy is tested with made-up instants instead of sleeps.
#[derive(Default)]
struct Batch {
    rows: Vec<LogRow>,
    oldest: Option<Instant>,
}

impl Batch {
    /// How long the writer may wait for the next record.
    fn wait(&self, now: Instant) -> Duration {
        self.oldest.map(|t| MAX_WAIT.saturating_sub(now.saturating_duration_since(t))).unwrap_or(MAX_WAIT)
    }

    /// Adds a record arriving at `now`; true when the batch is due.
    fn push(&mut self, row: LogRow, now: Instant) -> bool {
        self.rows.push(row);
        let first = *self.oldest.get_or_insert(now);
        self.rows.len() >= BATCH_RECORDS || now.saturating_duration_since(first) >= MAX_WAIT
    }

    /// The records to write; the batch starts again empty.
    fn take(&mut self) -> Vec<LogRow> {
        self.oldest = None;
        std::mem::take(&mut self.rows)
    }
}

fn writer(name: &str, rx: Receiver<Msg>, fallback: PathBuf, mut write: impl FnMut(&[LogRow]) -> Result<(), String>) {
    let mut batch = Batch::default();
    loop {
        let msg = rx.recv_timeout(batch.wait(Instant::now()));
        let mut ack = None;
        let mut disconnected = matches!(msg, Err(RecvTimeoutError::Disconnected));
        match msg {
            Ok(Msg::Record(r)) => {
                if !batch.push(r, Instant::now()) {
                    continue;
                }
            }
            Ok(Msg::Flush(a)) => ack = Some(a),
            Ok(Msg::Close(a)) => {
                ack = Some(a);
                disconnected = true;
            }
            Err(_) => {}
        }
        if !batch.rows.is_empty() {
            let rows = batch.take();
            if let Err(why) = write(&rows) {
                write_fallback(name, &fallback, &rows, &why);
            }
        }
        if let Some(a) = ack {
            let _ = a.send(());
        }
        if disconnected {
            return;
        }
    }
}

fn write_fallback(name: &str, path: &PathBuf, rows: &[LogRow], why: &str) {
    let result = (|| -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut f = OpenOptions::new().create(true).append(true).open(path)?;
        for r in rows {
            writeln!(f, "{}", serde_json::to_string(r).unwrap_or_default())?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => eprintln!("dc-host: {name} failed ({why}); {} records written to {}", rows.len(), path.display()),
        Err(e) => eprintln!("dc-host: {name} failed ({why}) and fallback file {} failed too ({e})", path.display()),
    }
}

/// Inserts log rows in one transaction.
pub async fn insert_batch(db: &Database, rows: &[LogRow]) -> Result<(), DbError> {
    macro_rules! insert_all {
        ($tx:expr) => {{
            for r in rows {
                sqlx::query("INSERT INTO logs (ts, level, target, message, app_id, runtime_id, context) VALUES ($1, $2, $3, $4, $5, $6, $7)")
                    .bind(r.ts).bind(&r.level).bind(&r.target).bind(&r.message).bind(&r.app_id).bind(&r.runtime_id).bind(&r.context)
                    .execute(&mut *$tx).await?;
            }
        }};
    }
    crate::in_write_tx!(db, tx => insert_all!(tx));
    Ok(())
}

/// Log records of a run, oldest first.
pub async fn for_run(db: &Database, runtime_id: &RuntimeId, limit: i64) -> Result<Vec<LogRow>, DbError> {
    Ok(on_pool!(db, pool => sqlx::query_as::<_, LogRow>(
        "SELECT ts, level, target, message, app_id, runtime_id, context FROM logs WHERE runtime_id = $1 ORDER BY id LIMIT $2")
        .bind(runtime_id).bind(limit).fetch_all(pool).await)?)
}

/// The id of the newest log record (none: the table is empty). Live views
/// (the API's event streams) start after it and read newer records by id.
pub async fn last_id(db: &Database) -> Result<Option<i64>, DbError> {
    Ok(on_pool!(db, pool => sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(id) FROM logs").fetch_one(pool).await)?)
}

/// A log record with its id (the order records were written in).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct LogEntry {
    /// Id, increasing.
    pub id: i64,
    /// The record.
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub row: LogRow,
}

/// A filtered page of log records, oldest first ([`query`]).
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    /// Only records of this app.
    pub app_id: Option<AppId>,
    /// Only records of this run.
    pub runtime_id: Option<RuntimeId>,
    /// Only records at this level or more severe.
    pub min_level: Option<tracing::Level>,
    /// Only records at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Only records before this time.
    pub until: Option<DateTime<Utc>>,
    /// Continue after this record id.
    pub after_id: Option<i64>,
    /// At most this many.
    pub limit: i64,
}

/// The severity rank stored levels compare by (TRACE 1 … ERROR 5).
fn level_rank(level: tracing::Level) -> i64 {
    match level {
        tracing::Level::TRACE => 1,
        tracing::Level::DEBUG => 2,
        tracing::Level::INFO => 3,
        tracing::Level::WARN => 4,
        tracing::Level::ERROR => 5,
    }
}

/// A page of log records matching `q`, oldest first.
pub async fn query(db: &Database, q: &LogQuery) -> Result<Vec<LogEntry>, DbError> {
    Ok(on_pool!(db, pool => sqlx::query_as::<_, LogEntry>(
        "SELECT id, ts, level, target, message, app_id, runtime_id, context FROM logs \
         WHERE ($1 IS NULL OR app_id = $1) AND ($2 IS NULL OR runtime_id = $2) \
         AND ($3 IS NULL OR (CASE level WHEN 'ERROR' THEN 5 WHEN 'WARN' THEN 4 WHEN 'INFO' THEN 3 WHEN 'DEBUG' THEN 2 ELSE 1 END) >= $3) \
         AND ($4 IS NULL OR ts >= $4) AND ($5 IS NULL OR ts < $5) AND ($6 IS NULL OR id > $6) ORDER BY id LIMIT $7")
        .bind(&q.app_id).bind(&q.runtime_id).bind(q.min_level.map(level_rank)).bind(q.since).bind(q.until)
        .bind(q.after_id).bind(q.limit).fetch_all(pool).await)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(i: usize) -> LogRow {
        LogRow {
            ts: Utc::now(),
            level: "INFO".into(),
            target: "t".into(),
            message: format!("tick {i}"),
            app_id: None,
            runtime_id: None,
            context: sqlx::types::Json(Value::Null),
        }
    }

    /// A steady trickle (one record every 50 ms: never a lull, never 500 at
    /// once) is written at the latest MAX_WAIT after its oldest record, not
    /// only when the records stop. The writer's loop is played with made-up
    /// instants: it wakes up for a record or when `wait` runs out.
    #[test]
    fn a_steady_trickle_is_written_within_the_maximum_wait() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut batch = Batch::default();
        // (oldest record's arrival, write time, records) of every write
        let mut written: Vec<(Instant, Instant, usize)> = Vec::new();
        for i in 0..50u64 {
            let now = at(50 * i);
            if let Some(oldest) = batch.oldest
                && now > oldest + batch.wait(oldest)
            {
                // the wait ran out before this record came: a timed write
                written.push((oldest, oldest + batch.wait(oldest), batch.take().len()));
            }
            let oldest = *batch.oldest.get_or_insert(now);
            if batch.push(row(i as usize), now) {
                written.push((oldest, now, batch.take().len()));
            }
        }
        assert!(
            written.iter().all(|&(oldest, w, _)| w - oldest <= MAX_WAIT),
            "a batch waited longer than {MAX_WAIT:?}: {written:?}"
        );
        // records 0..=5 arrive within 250 ms of record 0: the sixth makes it due
        assert_eq!((written[0].1 - t0, written[0].2), (Duration::from_millis(250), 6), "{written:?}");
        assert_eq!(written.iter().map(|w| w.2).sum::<usize>() + batch.rows.len(), 50);
        // what is left is written MAX_WAIT after its oldest record at the latest
        let oldest = batch.oldest.expect("records left");
        assert_eq!(batch.wait(oldest), MAX_WAIT);
        assert_eq!(batch.wait(oldest + Duration::from_millis(100)), Duration::from_millis(150));
        assert_eq!(batch.wait(oldest + Duration::from_millis(400)), Duration::ZERO);
    }

    #[test]
    fn a_burst_is_written_at_the_batch_size() {
        let now = Instant::now();
        let mut batch = Batch::default();
        let due: Vec<bool> = (0..BATCH_RECORDS).map(|i| batch.push(row(i), now)).collect();
        assert!(due[..BATCH_RECORDS - 1].iter().all(|d| !d) && due[BATCH_RECORDS - 1]);
        assert_eq!(batch.take().len(), BATCH_RECORDS);
        assert_eq!(batch.wait(now), MAX_WAIT, "an empty batch waits the whole MAX_WAIT for its first record");
    }
}
