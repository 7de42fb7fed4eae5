//! The injected wait between polls: [`TokioSleeper`] in the host,
//! [`RecordingSleeper`] in tests (returns at once and records what it was
//! asked to wait, so the polling schedule is asserted without sleeping).

use std::sync::Mutex;
use std::time::Duration;

use crate::BoxFuture;

/// Waits between requests to a provider.
pub trait Sleeper: Send + Sync {
    /// Waits `d`.
    fn sleep(&self, d: Duration) -> BoxFuture<'_, ()>;
}

/// Waits with `tokio::time::sleep`.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioSleeper;

impl Sleeper for TokioSleeper {
    fn sleep(&self, d: Duration) -> BoxFuture<'_, ()> {
        Box::pin(tokio::time::sleep(d))
    }
}

/// Returns at once and records each wait.
#[derive(Debug, Default)]
pub struct RecordingSleeper {
    waits: Mutex<Vec<Duration>>,
}

impl RecordingSleeper {
    /// The waits asked for, in order.
    pub fn waits(&self) -> Vec<Duration> {
        self.waits.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Sleeper for RecordingSleeper {
    fn sleep(&self, d: Duration) -> BoxFuture<'_, ()> {
        self.waits.lock().unwrap_or_else(|p| p.into_inner()).push(d);
        Box::pin(std::future::ready(()))
    }
}
