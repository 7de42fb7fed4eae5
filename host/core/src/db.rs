//! The database: one [`Database`] handle over SQLite (embedded default) or
//! PostgreSQL, chosen by URL, with the migrations of `migrations/<backend>/`
//! embedded in the binary. Every feature works on both backends; code that needs
//! backend-specific SQL matches on the variant (the connector seam where an MSSQL
//! backend would be added).
//!
//! SQLite is opened in WAL mode with a busy timeout, and writers start with
//! `BEGIN IMMEDIATE`, so the host and its worker processes can write the same
//! file at once without "database is locked".

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection};

use crate::settings::{Settings, redact_url};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("../../migrations/postgres");

/// The core tables, in creation order (drop goes in reverse).
pub const CORE_TABLES: &[&str] = &[
    "app_groups",
    "app_parents",
    "apps",
    "plugin_versions",
    "app_db_objects",
    "runtime",
    "run_changes",
    "logs",
    "app_functions",
    "function_log",
    "dc_plugin_tables",
    "dc_hosts",
    "dc_plugin_files",
    "dc_auth_users",
    "dc_auth_clients",
    "dc_auth_refresh_tokens",
    "dc_auth_keys",
    "dc_proxy_reservations",
    "dc_run_metrics",
    "dc_run_items",
    "dc_audit",
];

/// A database failure, naming the URL (password redacted) or the statement.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The server or file could not be reached.
    #[error("cannot connect to database {url}: {source}; {hint}")]
    Connect {
        /// Redacted URL.
        url: String,
        /// Cause.
        source: sqlx::Error,
        /// What to check, for this backend.
        hint: String,
    },
    /// An SQLite database file or its directory is missing or not writable.
    #[error("{0}")]
    SqliteFile(String),
    /// The URL does not parse.
    #[error("invalid database URL {url}: {message}")]
    BadUrl {
        /// Redacted URL.
        url: String,
        /// What is wrong.
        message: String,
    },
    /// Applying migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("{}", query_message(.0))]
    Query(#[from] sqlx::Error),
    /// A guarded operation was called without confirmation, or a name is
    /// ambiguous; the message says what to do.
    #[error("{0}")]
    Refused(String),
    /// The app or run named does not exist; the message says how to list them.
    #[error("{0}")]
    NotFound(String),
    /// The change contradicts the current state (an app with an active run
    /// cannot be deleted); the message says what to do first.
    #[error("{0}")]
    Conflict(String),
    /// The schema is not the one this build uses; the message names the command to run.
    #[error("{0}")]
    Schema(String),
}

impl DbError {
    /// What kind of failure this is.
    pub fn kind(&self) -> crate::ErrorKind {
        use crate::ErrorKind as K;
        match self {
            DbError::Connect { .. } | DbError::SqliteFile(_) => K::Unavailable,
            DbError::BadUrl { .. } | DbError::Refused(_) => K::Invalid,
            DbError::NotFound(_) => K::NotFound,
            DbError::Conflict(_) => K::Conflict,
            // the schema is behind or ahead: an operator must act first
            DbError::Schema(_) => K::Unavailable,
            DbError::Migrate(_) => K::Internal,
            DbError::Query(e) => crate::error::sqlx_kind(e),
        }
    }
}

/// Where a database's schema stands against this build's migrations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaState {
    /// Every migration of this build is applied, and no other.
    Current,
    /// No dc-host schema at all.
    Empty,
    /// Migrations of this build are missing.
    Behind {
        /// The newest applied version.
        applied: Option<i64>,
        /// Versions still to apply.
        missing: Vec<i64>,
    },
    /// Migrations this build does not know are applied (a newer dc-host ran).
    Ahead {
        /// The unknown versions.
        unknown: Vec<i64>,
    },
}

/// The hint for a server that cannot be reached.
const SERVER_HINT: &str = "check that the server runs and the URL is right (DC_DATABASE_URL or [database] url)";

/// True when `e` means the connection to the server broke (server restarted,
/// network cut), as opposed to a query the server refused.
pub fn is_connection_lost(e: &sqlx::Error) -> bool {
    use std::io::ErrorKind as K;
    match e {
        sqlx::Error::Io(io) => matches!(
            io.kind(),
            K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::NotConnected
        ),
        sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => true,
        // PostgreSQL's "connection exception" (08…) and "operator intervention"
        // (57P01 terminated by an administrator, 57P02 crash, 57P03 starting up)
        sqlx::Error::Database(d) => d.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
        _ => false,
    }
}

fn query_message(e: &sqlx::Error) -> String {
    if is_connection_lost(e) {
        format!("database connection lost ({e}); check that the database server is up, then run again")
    } else if let sqlx::Error::Database(d) = e
        && d.code().as_deref() == Some("14")
    {
        format!(
            "the SQLite database file cannot be opened any more ({e}): it was deleted or moved while dc-host was using it, or its directory is no longer accessible; restore the file, then run again"
        )
    } else {
        format!("database error: {e}")
    }
}

/// Checks an SQLite database path before connecting: its directory must
/// exist (it is created only for the default database under the data
/// directory, `create_dir`), and an existing file must be writable.
fn check_sqlite_file(path: &Path, shown: &str, create_dir: bool) -> Result<(), DbError> {
    if path.as_os_str().is_empty() || path.to_str() == Some(":memory:") {
        return Ok(());
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.exists()
    {
        if !create_dir {
            return Err(DbError::SqliteFile(format!(
                "the directory {} of the SQLite database {shown} does not exist; create it (mkdir -p {}) or fix database.url",
                parent.display(),
                parent.display()
            )));
        }
        std::fs::create_dir_all(parent).map_err(|e| {
            DbError::SqliteFile(format!(
                "cannot create the directory {} for the SQLite database: {e}; check general.data_dir and its permissions",
                parent.display()
            ))
        })?;
    }
    if path.exists()
        && let Err(e) = std::fs::OpenOptions::new().read(true).write(true).open(path)
    {
        return Err(DbError::SqliteFile(format!(
            "the SQLite database {} cannot be opened for writing ({e}); check the file's permissions (it must be readable and writable by this user) and that its directory is writable",
            path.display()
        )));
    }
    Ok(())
}

/// Which backend a [`Database`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// A connection pool to the host's database.
#[derive(Debug, Clone)]
pub enum Database {
    /// SQLite.
    Sqlite(SqlitePool),
    /// PostgreSQL.
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to whichever pool the database holds; the
/// body must type-check for both backends.
#[macro_export]
#[doc(hidden)]
macro_rules! on_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::db::Database::Sqlite($pool) => $body,
            $crate::db::Database::Postgres($pool) => $body,
        }
    };
}

/// Runs `$body` inside a write transaction bound to `$tx` and commits it. On
/// SQLite the transaction starts with `BEGIN IMMEDIATE`, taking the write lock
/// up front (waiting up to the busy timeout) instead of failing with "database
/// is locked" when a read has to be upgraded. Use `&mut *$tx` as executor.
#[macro_export]
#[doc(hidden)]
macro_rules! in_write_tx {
    ($db:expr, $tx:ident => $body:expr) => {
        match $db {
            $crate::db::Database::Sqlite(pool) => {
                let mut $tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
            $crate::db::Database::Postgres(pool) => {
                let mut $tx = pool.begin().await?;
                let out = $body;
                $tx.commit().await?;
                out
            }
        }
    };
}

/// Which file an SQLite database is: its path and the (device, inode) the
/// path named when the identity was taken. A file deleted or replaced under a
/// running process (a restored backup, a careless `rm`) keeps being written
/// through the open handle, into a file nobody will read again; a worker takes
/// the identity when it starts and checks it before it commits a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileIdentity {
    path: std::path::PathBuf,
    dev: u64,
    ino: u64,
}

impl FileIdentity {
    fn of(path: &Path) -> std::io::Result<FileIdentity> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path)?;
        Ok(FileIdentity { path: path.to_path_buf(), dev: m.dev(), ino: m.ino() })
    }

    /// The database file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fails if the path no longer names the same file.
    pub fn check(&self) -> Result<(), DbError> {
        match FileIdentity::of(&self.path) {
            Ok(now) if now == *self => Ok(()),
            Ok(_) => Err(DbError::SqliteFile(format!(
                "the SQLite database {} was replaced by another file while this run was running; the run's rows were not stored (they would have gone into the old, unlinked file): run it again",
                self.path.display()
            ))),
            Err(e) => Err(DbError::SqliteFile(format!(
                "the SQLite database {} is gone ({e}); it was deleted or moved while this run was running, so the run's rows were not stored: restore the file and run again",
                self.path.display()
            ))),
        }
    }
}

/// Awaits a database write, logging "waiting for the database" after a second
/// and then every ten seconds until it completes. SQLite has one writer at a
/// time: a run merging a large table holds the write lock until it commits,
/// and every other writer waits for it (up to `database.busy_timeout_secs`,
/// which `dc-host run` and its worker raise to the run's time limit) instead
/// of failing with "database is locked"; this makes the wait visible.
pub async fn waiting_for_lock<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    let started = std::time::Instant::now();
    tokio::pin!(fut);
    let mut next = Duration::from_secs(1);
    loop {
        tokio::select! {
            out = &mut fut => return out,
            () = tokio::time::sleep_until(tokio::time::Instant::from_std(started + next)) => {
                tracing::warn!(
                    waited_secs = started.elapsed().as_secs(),
                    "waiting for the database to {what}: another process holds its write lock (SQLite allows one writer at a time)"
                );
                next += Duration::from_secs(10);
            }
        }
    }
}

/// A write transaction on either backend. On SQLite it starts with `BEGIN
/// IMMEDIATE` (the write lock is taken up front, waiting up to the busy
/// timeout). Dropped without [`WriteTx::commit`], it rolls back: this is how a
/// registration or a run that fails part-way leaves nothing behind.
#[derive(Debug)]
pub enum WriteTx {
    /// SQLite.
    Sqlite(sqlx::Transaction<'static, sqlx::Sqlite>),
    /// PostgreSQL.
    Postgres(sqlx::Transaction<'static, sqlx::Postgres>),
}

impl WriteTx {
    /// Commits everything written in the transaction.
    pub async fn commit(self) -> Result<(), DbError> {
        match self {
            WriteTx::Sqlite(t) => t.commit().await?,
            WriteTx::Postgres(t) => t.commit().await?,
        }
        Ok(())
    }

    /// Rolls everything back.
    pub async fn rollback(self) -> Result<(), DbError> {
        match self {
            WriteTx::Sqlite(t) => t.rollback().await?,
            WriteTx::Postgres(t) => t.rollback().await?,
        }
        Ok(())
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        match self {
            WriteTx::Sqlite(_) => Backend::Sqlite,
            WriteTx::Postgres(_) => Backend::Postgres,
        }
    }

    /// True if a table with this name exists (as seen inside the transaction).
    pub async fn table_exists(&mut self, name: &str) -> Result<bool, DbError> {
        let n: i64 = match self {
            WriteTx::Sqlite(t) => sqlx::query_scalar(SQLITE_TABLE_EXISTS).bind(name).fetch_one(&mut **t).await?,
            WriteTx::Postgres(t) => sqlx::query_scalar(PG_TABLE_EXISTS).bind(name).fetch_one(&mut **t).await?,
        };
        Ok(n > 0)
    }
}

/// Runs `$body` with `$conn` bound to the transaction's connection
/// (`&mut SqliteConnection` or `&mut PgConnection`); the body must type-check
/// for both backends. Use `&mut *$conn` as executor.
#[macro_export]
#[doc(hidden)]
macro_rules! on_tx {
    ($tx:expr, $conn:ident => $body:expr) => {
        match $tx {
            $crate::db::WriteTx::Sqlite(t) => {
                let $conn = &mut **t;
                $body
            }
            $crate::db::WriteTx::Postgres(t) => {
                let $conn = &mut **t;
                $body
            }
        }
    };
}

const SQLITE_TABLE_EXISTS: &str = "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = $1";
const PG_TABLE_EXISTS: &str =
    "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = $1";

/// One migration and whether it is applied.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MigrationState {
    /// Version number.
    pub version: i64,
    /// Description from the file name.
    pub description: String,
    /// Applied to this database.
    pub applied: bool,
}

/// The options every SQLite connection of the host opens with.
fn sqlite_options(opts: SqliteConnectOptions, settings: &Settings) -> SqliteConnectOptions {
    opts.journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(settings.database.busy_timeout_secs))
        .foreign_keys(true)
}

impl Database {
    /// Connects using the settings (creating the SQLite file and its directory).
    pub async fn connect(settings: &Settings) -> Result<Database, DbError> {
        Database::connect_url(&settings.database_url(), settings).await
    }

    /// Connects like [`Database::connect`] but without PostgreSQL's first
    /// diagnostic connection (one connection set-up less): for a worker,
    /// whose supervisor has just connected with the same settings.
    pub async fn connect_trusted(settings: &Settings) -> Result<Database, DbError> {
        Database::connect_inner(&settings.database_url(), settings, false).await
    }

    /// A pool that opens its connections when first used, doing no I/O now:
    /// for a worker, whose supervisor has just connected with the same
    /// settings and checked the schema, so the worker's start-up (loading the
    /// plugin, `prepare_list`, the first `collect`) does not wait for a
    /// connection. Never creates an SQLite file. [`Database::warm_up`] opens
    /// the first connection (in the background); a database that cannot be
    /// reached makes the first query fail with the connection error.
    pub fn connect_lazy(settings: &Settings) -> Result<Database, DbError> {
        let url = settings.database_url();
        let shown = redact_url(&url);
        let db = &settings.database;
        let acquire = Duration::from_secs(db.connect_timeout_secs);
        if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(&url)
                .map_err(|e| DbError::BadUrl { url: shown, message: e.to_string() })?;
            let opts = sqlite_options(opts.create_if_missing(false), settings);
            let pool = SqlitePoolOptions::new()
                .max_connections(db.max_connections)
                .acquire_timeout(acquire)
                .connect_lazy_with(opts);
            Ok(Database::Sqlite(pool))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(&url)
                .map_err(|e| DbError::BadUrl { url: shown, message: e.to_string() })?
                .application_name("dc-host");
            let pool = PgPoolOptions::new()
                .max_connections(db.max_connections)
                .acquire_timeout(acquire)
                .connect_lazy_with(opts);
            Ok(Database::Postgres(pool))
        } else {
            Err(DbError::BadUrl { url: shown, message: "use sqlite://PATH or postgres://USER@HOST:PORT/DB".into() })
        }
    }

    /// Opens a connection of the pool (if it has none idle) and leaves it in
    /// the pool for the next query; the error names the database (its URL
    /// redacted) and what to check.
    pub async fn warm_up(&self, settings: &Settings) -> Result<(), DbError> {
        on_pool!(self, pool => pool.acquire().await.map(drop)).map_err(|source| {
            let hint = match self {
                Database::Sqlite(p) => format!(
                    "check that {} is an SQLite database file this user can read and write (DC_DATABASE_URL or [database] url)",
                    p.connect_options().get_filename().display()
                ),
                Database::Postgres(_) => SERVER_HINT.into(),
            };
            DbError::Connect { url: redact_url(&settings.database_url()), source, hint }
        })
    }

    /// Connects to an explicit URL with the pool settings of `settings`.
    pub async fn connect_url(url: &str, settings: &Settings) -> Result<Database, DbError> {
        Database::connect_inner(url, settings, true).await
    }

    async fn connect_inner(url: &str, settings: &Settings, diagnose: bool) -> Result<Database, DbError> {
        let shown = redact_url(url);
        let db = &settings.database;
        let acquire = Duration::from_secs(db.connect_timeout_secs);
        if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)
                .map_err(|e| DbError::BadUrl { url: shown.clone(), message: e.to_string() })?;
            // only a first start creates the file: a pool opens connections
            // later too, and one must never put an empty database where the
            // file was deleted under a running process
            let missing = !opts.get_filename().exists();
            let opts = sqlite_options(opts.create_if_missing(missing), settings);
            // the default database lives under the data directory, created on first start;
            // an explicit URL into a directory that does not exist is a mistake to report
            check_sqlite_file(opts.get_filename(), &shown, url == settings.default_database_url())?;
            let hint = format!(
                "check that {} is an SQLite database file this user can read and write, in a writable directory (DC_DATABASE_URL or [database] url)",
                opts.get_filename().display()
            );
            // opening can meet another process that holds the file's lock (a first
            // start migrating it, switching it to WAL): wait for it like for a writer
            let busy_until = std::time::Instant::now() + Duration::from_secs(db.busy_timeout_secs.max(1));
            let pool = loop {
                match SqlitePoolOptions::new()
                    .max_connections(db.max_connections)
                    .acquire_timeout(acquire)
                    .connect_with(opts.clone())
                    .await
                {
                    Ok(pool) => break pool,
                    Err(sqlx::Error::Database(d))
                        if matches!(d.code().as_deref(), Some("5" | "6")) && std::time::Instant::now() < busy_until =>
                    {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    Err(source) => return Err(DbError::Connect { url: shown, source, hint }),
                }
            };
            Ok(Database::Sqlite(pool))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url)
                .map_err(|e| DbError::BadUrl { url: shown.clone(), message: e.to_string() })?
                .application_name("dc-host");
            // one direct connection first: a refused or misconfigured server then
            // reports its real cause instead of a pool time-out
            // (skipped for a worker, whose supervisor has just connected)
            if diagnose {
                let probe = tokio::time::timeout(acquire, sqlx::postgres::PgConnection::connect_with(&opts))
                    .await
                    .map_err(|_| DbError::Connect {
                        url: shown.clone(),
                        source: sqlx::Error::PoolTimedOut,
                        hint: SERVER_HINT.into(),
                    })?
                    .map_err(|source| DbError::Connect { url: shown.clone(), source, hint: SERVER_HINT.into() })?;
                probe.close().await.map_err(|source| DbError::Connect {
                    url: shown.clone(),
                    source,
                    hint: SERVER_HINT.into(),
                })?;
            }
            let pool = PgPoolOptions::new()
                .max_connections(db.max_connections)
                .acquire_timeout(acquire)
                .connect_with(opts)
                .await
                .map_err(|source| DbError::Connect { url: shown, source, hint: SERVER_HINT.into() })?;
            Ok(Database::Postgres(pool))
        } else {
            Err(DbError::BadUrl { url: shown, message: "use sqlite://PATH or postgres://USER@HOST:PORT/DB".into() })
        }
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        match self {
            Database::Sqlite(_) => Backend::Sqlite,
            Database::Postgres(_) => Backend::Postgres,
        }
    }

    fn migrator(&self) -> &'static Migrator {
        match self {
            Database::Sqlite(_) => &SQLITE_MIGRATIONS,
            Database::Postgres(_) => &POSTGRES_MIGRATIONS,
        }
    }

    /// Applies pending migrations; returns how many were applied. On SQLite,
    /// concurrent first starts are serialized with a lock file beside the
    /// database (`<file>.migrate.lock`); PostgreSQL migrations take an advisory lock.
    pub async fn migrate(&self) -> Result<usize, DbError> {
        let _lock = self.migration_lock()?;
        self.migrate_holding_lock().await
    }

    async fn migrate_holding_lock(&self) -> Result<usize, DbError> {
        let before = self.status().await?.iter().filter(|m| m.applied).count();
        on_pool!(self, pool => self.migrator().run(pool).await)?;
        let after = self.status().await?.iter().filter(|m| m.applied).count();
        Ok(after - before)
    }

    fn migration_lock(&self) -> Result<Option<std::fs::File>, DbError> {
        let Database::Sqlite(pool) = self else { return Ok(None) };
        let file = pool.connect_options().get_filename().to_path_buf();
        if file.as_os_str().is_empty() || file.to_str() == Some(":memory:") {
            return Ok(None);
        }
        let mut name = file.into_os_string();
        name.push(".migrate.lock");
        let path = std::path::PathBuf::from(name);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .and_then(|f| f.lock().map(|()| f))
            .map_err(|e| DbError::SqliteFile(format!("cannot lock {} for migrating: {e}", path.display())))?;
        Ok(Some(lock))
    }

    /// Where this database's schema stands against this build's migrations
    /// (one query on the migrations table, the schema-version stamp).
    pub async fn schema_state(&self) -> Result<SchemaState, DbError> {
        if !self.table_exists("_sqlx_migrations").await? {
            return Ok(SchemaState::Empty);
        }
        let applied: Vec<i64> = on_pool!(self, pool => sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version").fetch_all(pool).await)?;
        let known: Vec<i64> = self.migrator().iter().map(|m| m.version).collect();
        let unknown: Vec<i64> = applied.iter().copied().filter(|v| !known.contains(v)).collect();
        if !unknown.is_empty() {
            return Ok(SchemaState::Ahead { unknown });
        }
        let missing: Vec<i64> = known.iter().copied().filter(|v| !applied.contains(v)).collect();
        if missing.is_empty() {
            Ok(SchemaState::Current)
        } else {
            Ok(SchemaState::Behind { applied: applied.last().copied(), missing })
        }
    }

    /// Makes sure the schema is the one this build uses, without migrating:
    /// only `dc-host db migrate` / `db deploy` migrate, and a first start on an
    /// empty embedded (SQLite) database. Anything else is refused with the command to run.
    pub async fn ensure_schema(&self, shown_url: &str) -> Result<(), DbError> {
        let mut state = self.schema_state().await?;
        // another process may be migrating an empty embedded database right
        // now: look again once its migration lock is free
        let _lock = if state != SchemaState::Current && self.backend() == Backend::Sqlite {
            let lock = self.migration_lock()?;
            state = self.schema_state().await?;
            lock
        } else {
            None
        };
        match state {
            SchemaState::Current => Ok(()),
            SchemaState::Empty if self.backend() == Backend::Sqlite => self.migrate_holding_lock().await.map(|_| ()),
            SchemaState::Empty => Err(DbError::Schema(format!(
                "database {shown_url} has no dc-host schema yet: run `dc-host db migrate` (or `dc-host db deploy`) once"
            ))),
            SchemaState::Behind { applied, missing } => Err(DbError::Schema(format!(
                "database {shown_url} is at schema version {}, this dc-host needs {}: run `dc-host db migrate`",
                applied.map(|v| v.to_string()).unwrap_or_else(|| "none".into()),
                missing.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ")
            ))),
            SchemaState::Ahead { unknown } => Err(DbError::Schema(format!(
                "database {shown_url} has schema versions this dc-host does not know ({}): a newer dc-host migrated it; upgrade this one",
                unknown.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ")
            ))),
        }
    }

    /// Every embedded migration and whether it is applied here.
    pub async fn status(&self) -> Result<Vec<MigrationState>, DbError> {
        let exists = self.table_exists("_sqlx_migrations").await?;
        let applied: Vec<i64> = if exists {
            on_pool!(self, pool => sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success").fetch_all(pool).await)?
        } else {
            Vec::new()
        };
        Ok(self
            .migrator()
            .iter()
            .map(|m| MigrationState {
                version: m.version,
                description: m.description.to_string(),
                applied: applied.contains(&m.version),
            })
            .collect())
    }

    /// The identity of the SQLite file (None for PostgreSQL and in-memory
    /// databases): see [`FileIdentity`].
    pub fn sqlite_file_identity(&self) -> Result<Option<FileIdentity>, DbError> {
        let Database::Sqlite(pool) = self else { return Ok(None) };
        let path = pool.connect_options().get_filename().to_path_buf();
        if path.as_os_str().is_empty() || path.to_str() == Some(":memory:") {
            return Ok(None);
        }
        FileIdentity::of(&path)
            .map(Some)
            .map_err(|e| DbError::SqliteFile(format!("cannot read the SQLite database file {}: {e}", path.display())))
    }

    /// Starts a write transaction (see [`WriteTx`]), saying so while it waits
    /// for another process's write lock ([`waiting_for_lock`]).
    pub async fn begin_write(&self) -> Result<WriteTx, DbError> {
        Ok(match self {
            Database::Sqlite(p) => {
                WriteTx::Sqlite(waiting_for_lock("start writing", p.begin_with("BEGIN IMMEDIATE")).await?)
            }
            Database::Postgres(p) => WriteTx::Postgres(p.begin().await?),
        })
    }

    /// True if a table with this name exists.
    pub async fn table_exists(&self, name: &str) -> Result<bool, DbError> {
        let n: i64 = match self {
            Database::Sqlite(p) => sqlx::query_scalar(SQLITE_TABLE_EXISTS).bind(name).fetch_one(p).await?,
            Database::Postgres(p) => sqlx::query_scalar(PG_TABLE_EXISTS).bind(name).fetch_one(p).await?,
        };
        Ok(n > 0)
    }

    /// Drops every plugin table recorded in `app_db_objects` and every core
    /// table. Refused unless `confirm` is true.
    pub async fn drop_all(&self, confirm: bool) -> Result<Vec<String>, DbError> {
        if !confirm {
            return Err(DbError::Refused(
                "dropping deletes every table and all collected data; run again with --yes-drop-everything to confirm"
                    .into(),
            ));
        }
        let mut dropped = Vec::new();
        if self.table_exists("app_db_objects").await? {
            let dc_plugin_tables: Vec<String> = on_pool!(self, pool => sqlx::query_scalar(
                "SELECT DISTINCT object_name FROM app_db_objects WHERE object_type = 'TABLE' AND app_id <> 'dc-host'"
            ).fetch_all(pool).await)?;
            for t in dc_plugin_tables {
                crate::merge::check_ident(&t).map_err(|e| DbError::Refused(e.to_string()))?;
                let sql = format!("DROP TABLE IF EXISTS \"{t}\"");
                on_pool!(self, pool => sqlx::query(sqlx::AssertSqlSafe(sql)).execute(pool).await.map(|r| r.rows_affected()))?;
                dropped.push(t);
            }
        }
        for t in CORE_TABLES.iter().rev().chain(std::iter::once(&"_sqlx_migrations")) {
            let sql = format!("DROP TABLE IF EXISTS {t}");
            on_pool!(self, pool => sqlx::query(sqlx::AssertSqlSafe(sql)).execute(pool).await.map(|r| r.rows_affected()))?;
            dropped.push(t.to_string());
        }
        Ok(dropped)
    }

    /// Records the core tables in `app_db_objects` (owner `dc-host`).
    pub async fn seed(&self) -> Result<(), DbError> {
        for t in CORE_TABLES {
            crate::apps::record_db_object(
                self,
                &crate::ids::AppId::host(),
                t,
                crate::enums::DbObjectType::Table,
                "deploy",
            )
            .await?;
        }
        Ok(())
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }
}

/// Creates a fresh, empty PostgreSQL database next to `admin_url` (e.g.
/// `postgres://postgres@127.0.0.1:5432/postgres`) and returns its URL. Used by
/// tests and benchmarks that need a database of their own.
pub async fn create_scratch_postgres(admin_url: &str, prefix: &str) -> Result<String, DbError> {
    let mut conn = sqlx::postgres::PgConnection::connect(admin_url).await.map_err(|source| DbError::Connect {
        url: redact_url(admin_url),
        source,
        hint: SERVER_HINT.into(),
    })?;
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\""))).execute(&mut conn).await?;
    conn.close().await?;
    let opts = PgConnectOptions::from_str(admin_url)
        .map_err(|e| DbError::BadUrl { url: redact_url(admin_url), message: e.to_string() })?
        .database(&name);
    Ok(opts.to_url_lossy().to_string())
}
