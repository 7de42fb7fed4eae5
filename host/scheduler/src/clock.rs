//! The scheduler's clock, injected so the scheduler and its loop are tested
//! without sleeping or reading the wall clock: [`SystemClock`] in production,
//! [`ManualClock`] in tests.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// A source of the current time.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;
}

/// The operating system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that only moves when told to (shared by reference or `Arc`).
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock showing `at`.
    pub fn new(at: DateTime<Utc>) -> ManualClock {
        ManualClock { now: Mutex::new(at) }
    }

    /// Sets the time (it may go backwards, as a real clock can).
    pub fn set(&self, at: DateTime<Utc>) {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) = at;
    }

    /// Moves the time forward by `by` and returns the new time.
    pub fn advance(&self, by: Duration) -> DateTime<Utc> {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        let step = TimeDelta::from_std(by).unwrap_or(TimeDelta::MAX);
        *now = now.checked_add_signed(step).unwrap_or(DateTime::<Utc>::MAX_UTC);
        *now
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> DateTime<Utc> {
        (**self).now()
    }
}

impl<C: Clock + ?Sized> Clock for &C {
    fn now(&self) -> DateTime<Utc> {
        (**self).now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("test instant").to_utc()
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = Arc::new(ManualClock::new(utc("2026-03-29T00:59:00Z")));
        let shared: Arc<dyn Clock> = clock.clone();
        assert_eq!(shared.now(), utc("2026-03-29T00:59:00Z"));
        assert_eq!(clock.advance(Duration::from_secs(90)), utc("2026-03-29T01:00:30Z"));
        assert_eq!(shared.now(), utc("2026-03-29T01:00:30Z"));
        clock.set(utc("2026-01-01T00:00:00Z"));
        fn read(clock: impl Clock) -> DateTime<Utc> {
            clock.now()
        }
        assert_eq!(read(&*clock), utc("2026-01-01T00:00:00Z"));
    }

    #[test]
    fn a_scheduler_tick_driven_by_the_manual_clock() {
        use crate::{MissedPolicy, Schedule};
        let clock = ManualClock::new(utc("2026-01-01T10:00:00Z"));
        let schedule = Schedule::every("5m", clock.now()).expect("parses");
        let mut next_run = schedule.next_after(clock.now()).expect("fires");
        let mut runs = Vec::new();
        for _ in 0..40 {
            clock.advance(Duration::from_secs(47)); // an uneven tick: runs still land on the grid
            let due = schedule.due(next_run, clock.now(), MissedPolicy::Skip);
            if due.run_now {
                runs.push(next_run.format("%H:%M:%S").to_string());
            }
            next_run = due.next_run.expect("fires");
        }
        assert_eq!(runs, ["10:05:00", "10:10:00", "10:15:00", "10:20:00", "10:25:00", "10:30:00"]);
    }
}
