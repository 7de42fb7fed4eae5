//! dc-runtime: everything between a plugin file and a finished run — probing a
//! file in a child process (`probe`), the content-addressed plugin store
//! (`store`), registration, reload and rollback (`registry`), argument
//! validation (`args`), the supervisor that runs each run in its own worker
//! process group (`supervisor`), the worker itself (`worker`, `callbacks`) and
//! the reaper of runs whose worker is gone (`reap`), the named host calls of
//! interface 1.3 (`host_call`), the plugins-directory
//! watcher (`watch`), the lookup of declared tables (`tables`), apps'
//! schedules and stored arguments (`schedule`) and stop requests (`stop`),
//! and the politeness limiter's wiring (`limits`: the permit server each
//! supervisor offers to serve, the limiter a worker's requests go through).
//!
//! Invariant: plugin code only ever executes in a child process (a probe or a
//! worker), so a plugin that panics, aborts, segfaults or hangs can take down
//! only that child. Only `probe` and `worker` touch abi_stable.

pub mod args;
pub mod callbacks;
pub mod host_call;
pub mod journal;
pub mod limits;
pub mod probe;
pub mod reap;
pub mod registry;
pub mod schedule;
pub mod stop;
pub mod store;
pub mod supervisor;
pub mod tables;
pub mod watch;
pub mod worker;

use std::path::PathBuf;

use dc_core::{Database, Settings};
use dc_plugin_api::capability;

pub use host_call::host_capabilities;

/// The capabilities every host implements for plugins; a host offers more when
/// configured for them ([`host_capabilities`]: `captcha` with a `[captcha]`
/// provider), and publishes that list (`dc-host interface`,
/// `HostCallbacks::capabilities`). Registration refuses a plugin whose
/// manifest requires one the host does not offer.
pub const HOST_CAPABILITIES: &[&str] = &[
    capability::FETCH,
    capability::MERGE,
    capability::LOG,
    capability::PROGRESS,
    capability::METRICS,
    capability::FRONTIER,
    capability::HTTP,
];

/// The file name of the host program (CLI and host process).
pub const HOST_PROGRAM: &str = "dc-host";

/// The file name of the worker program, the process of one run: installed next
/// to [`HOST_PROGRAM`] (both are built by `cargo build -p dc-host`).
pub const WORKER_PROGRAM: &str = "dc-worker";

/// What runtime operations need: settings, the database and the path of the
/// `dc-host` executable (which is re-executed as the plugin probe; runs start
/// [`HostEnv::worker_exe`] next to it).
#[derive(Debug, Clone)]
pub struct HostEnv {
    /// Effective settings.
    pub settings: Settings,
    /// The database.
    pub db: Database,
    /// The `dc-host` binary.
    pub exe: PathBuf,
}

impl HostEnv {
    /// The worker program the supervisor starts for each run: [`WORKER_PROGRAM`]
    /// in the directory of [`HostEnv::exe`].
    pub fn worker_exe(&self) -> PathBuf {
        self.exe.with_file_name(WORKER_PROGRAM)
    }
}

/// Errors of the runtime crate.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A plugin file or request was refused as invalid; the message says why
    /// and what to do.
    #[error("{0}")]
    Refused(String),
    /// The app, version or file named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The request contradicts the current state (the version is already
    /// registered, a downgrade, another app's table, a table change that
    /// needs `dc-host data migrate`).
    #[error("{0}")]
    Conflict(String),
    /// Runtime arguments do not match the plugin's schema.
    #[error("invalid runtime arguments for {app}: {problems}")]
    BadArgs {
        /// App path.
        app: String,
        /// Problems, each naming the field.
        problems: String,
    },
    /// Database failure.
    #[error(transparent)]
    Db(#[from] dc_core::DbError),
    /// Merge failure.
    #[error(transparent)]
    Merge(#[from] dc_core::merge::MergeError),
    /// File system failure.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// Which file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

impl RuntimeError {
    /// What kind of failure this is (see [`dc_core::ErrorKind`]).
    pub fn kind(&self) -> dc_core::ErrorKind {
        use dc_core::ErrorKind as K;
        match self {
            RuntimeError::Refused(_) | RuntimeError::BadArgs { .. } => K::Invalid,
            RuntimeError::NotFound(_) => K::NotFound,
            RuntimeError::Conflict(_) => K::Conflict,
            RuntimeError::Db(e) => e.kind(),
            RuntimeError::Merge(e) => e.kind(),
            RuntimeError::Io { .. } => K::Internal,
        }
    }

    /// `message`, classified like `cause` (a merge error wrapped with context
    /// keeps its kind).
    pub fn like(cause: &dc_core::merge::MergeError, message: String) -> RuntimeError {
        match cause.kind() {
            dc_core::ErrorKind::Conflict => RuntimeError::Conflict(message),
            dc_core::ErrorKind::NotFound => RuntimeError::NotFound(message),
            _ => RuntimeError::Refused(message),
        }
    }

    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> RuntimeError {
        let path = path.into();
        move |source| RuntimeError::Io { action, path, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dc_core::ErrorKind;
    use dc_core::merge::MergeError;

    #[test]
    fn errors_keep_their_kind_through_context() {
        let not_yours = MergeError::NotYours("table \"t\" belongs to app a/b/c".into());
        assert_eq!(RuntimeError::like(&not_yours, format!("x.so: {not_yours}")).kind(), ErrorKind::Conflict);
        let bad = MergeError::BadDeclaration("t: key columns must be declared columns".into());
        assert_eq!(RuntimeError::like(&bad, format!("x.so: {bad}")).kind(), ErrorKind::Invalid);
        assert_eq!(RuntimeError::NotFound("no version".into()).kind(), ErrorKind::NotFound);
        assert_eq!(RuntimeError::Refused("not a plugin".into()).kind(), ErrorKind::Invalid);
        assert_eq!(RuntimeError::Db(dc_core::DbError::SqliteFile("gone".into())).kind(), ErrorKind::Unavailable);
    }
}
