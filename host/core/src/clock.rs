//! The clock core reads for the timestamps it stores (`_first_seen`,
//! `_last_seen`, `_archived_at` of merged rows). Production code passes
//! [`SYSTEM`]; tests pass a [`ManualClock`]'s clock and move it on, so no test
//! sleeps for time to pass.

use std::fmt;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

type NowFn = dyn Fn() -> DateTime<Utc> + Send + Sync;

/// Where "now" comes from: the system clock, or a function (a test's manual clock).
#[derive(Clone, Default)]
pub struct Clock(Option<Arc<NowFn>>);

/// The system clock.
pub static SYSTEM: Clock = Clock(None);

impl Clock {
    /// A clock that asks `now` for the time.
    pub fn from_fn(now: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) -> Clock {
        Clock(Some(Arc::new(now)))
    }

    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        match &self.0 {
            Some(f) => f(),
            None => Utc::now(),
        }
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "Clock(custom)" } else { "Clock(system)" })
    }
}

/// A clock that stands still until moved (for tests).
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: DateTime<Utc>) -> ManualClock {
        ManualClock(Arc::new(Mutex::new(start)))
    }

    /// Moves the clock on by `by`.
    pub fn advance(&self, by: chrono::TimeDelta) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) += by;
    }

    /// The time it shows.
    pub fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A [`Clock`] reading this one.
    pub fn clock(&self) -> Clock {
        let me = self.clone();
        Clock::from_fn(move || me.now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let start = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z").expect("a valid time").with_timezone(&Utc);
        let manual = ManualClock::new(start);
        let clock = manual.clock();
        assert_eq!(clock.now(), start);
        manual.advance(chrono::TimeDelta::seconds(90));
        assert_eq!(clock.now(), start + chrono::TimeDelta::seconds(90));
        assert!(SYSTEM.now() > start);
    }
}
