//! Watching the plugins directory: a `notify` watcher on the directory, a
//! debounce that lets a copy in progress finish, and a reload after each change
//! settles. `dc-host reload --watch` runs it with a callback that prints the
//! reports; an API can run it with a callback that forwards them.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};

use crate::registry::{self, RegisterOutcome, ReloadEntry};
use crate::{HostEnv, RuntimeError};

/// How long the plugins directory must be quiet before a reload: a file still
/// being copied keeps producing events, so it is registered once it is complete.
pub const SETTLE: Duration = Duration::from_millis(500);

/// What [`watch_plugins`] reports to its callback.
#[derive(Debug)]
pub enum WatchEvent {
    /// The watcher is in place: changes from now on are picked up.
    Watching {
        /// The plugins directory.
        dir: PathBuf,
    },
    /// A reload after changes settled: the files whose registration did
    /// something or was refused (files already active are left out), possibly
    /// none.
    Reloaded(Vec<ReloadEntry>),
}

/// Errors of [`watch_plugins`].
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The directory cannot be watched.
    #[error("cannot watch {dir}: {source}")]
    Watch {
        /// The plugins directory.
        dir: PathBuf,
        /// Cause.
        source: notify::Error,
    },
    /// A reload failed as a whole (a refused file is reported, not an error).
    #[error(transparent)]
    Reload(#[from] RuntimeError),
}

/// Watches the plugins directory (not recursively) and reloads it after each
/// burst of changes has been quiet for [`SETTLE`], reporting to `on_event`:
/// [`WatchEvent::Watching`] once the watcher is in place, then one
/// [`WatchEvent::Reloaded`] per reload. Runs until `on_event` returns
/// [`ControlFlow::Break`] (whose value it returns) or the task is cancelled;
/// `Ok(None)` if the watcher itself stops.
pub async fn watch_plugins<B>(
    env: &HostEnv,
    mut on_event: impl FnMut(WatchEvent) -> ControlFlow<B>,
) -> Result<Option<B>, WatchError> {
    let dir = env.settings.plugins_dir();
    let watch_err = |source| WatchError::Watch { dir: dir.clone(), source };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if ev.is_ok() {
            let _ = tx.send(());
        }
    })
    .map_err(watch_err)?;
    watcher.watch(&dir, RecursiveMode::NonRecursive).map_err(watch_err)?;
    if let ControlFlow::Break(b) = on_event(WatchEvent::Watching { dir: dir.clone() }) {
        return Ok(Some(b));
    }
    while rx.recv().await.is_some() {
        // let a copy in progress finish: wait until events stop for SETTLE
        while let Ok(Some(())) = tokio::time::timeout(SETTLE, rx.recv()).await {}
        let changed: Vec<ReloadEntry> = registry::reload(env)
            .await?
            .into_iter()
            .filter(|e| !matches!(e.result, Ok(RegisterOutcome::AlreadyActive { .. })))
            .collect();
        if let ControlFlow::Break(b) = on_event(WatchEvent::Reloaded(changed)) {
            return Ok(Some(b));
        }
    }
    Ok(None)
}
