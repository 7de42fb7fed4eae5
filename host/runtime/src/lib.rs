//! dc-runtime: everything between a plugin file and a finished run — probing a
//! file in a child process (`probe`), the content-addressed plugin store
//! (`store`), registration, reload and rollback (`registry`), argument
//! validation (`args`), the supervisor that runs each run in its own worker
//! process group (`supervisor`), the worker itself (`worker`, `callbacks`) and
//! the reaper of runs whose worker is gone (`reap`).
//!
//! Invariant: plugin code only ever executes in a child process (a probe or a
//! worker), so a plugin that panics, aborts, segfaults or hangs can take down
//! only that child. Only `probe` and `worker` touch abi_stable.

pub mod args;
pub mod callbacks;
pub mod probe;
pub mod reap;
pub mod registry;
pub mod store;
pub mod supervisor;
pub mod worker;

use std::path::PathBuf;

use dc_core::{Database, Settings};
use dc_plugin_api::capability;

/// The capabilities this host implements for plugins (published by
/// `dc-host interface` and `HostCallbacks::capabilities`). Registration refuses
/// a plugin whose manifest requires one that is not listed here.
pub const HOST_CAPABILITIES: &[&str] = &[capability::FETCH, capability::MERGE, capability::LOG, capability::PROGRESS];

/// What runtime operations need: settings, the database and the path of the
/// `dc-host` executable (which is re-executed as probe and worker).
#[derive(Debug, Clone)]
pub struct HostEnv {
    /// Effective settings.
    pub settings: Settings,
    /// The database.
    pub db: Database,
    /// The `dc-host` binary.
    pub exe: PathBuf,
}

/// Errors of the runtime crate.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A plugin file was refused; the message says why and what to do.
    #[error("{0}")]
    Refused(String),
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
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> RuntimeError {
        let path = path.into();
        move |source| RuntimeError::Io { action, path, source }
    }
}
