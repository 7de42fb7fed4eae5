//! dc-scheduler: when apps run (issue #9). Pure, synchronous scheduling logic
//! with no database, no async runtime and no CLI: cron expressions with
//! crontab(5) semantics and the Vixie day rule ([`cron`]), IANA time zones and
//! DST ([`zone`]), anchored intervals ([`Schedule::Every`], [`Period`]), the
//! missed-run policy ([`missed`]), deterministic jitter ([`jitter`]) and an
//! injected [`Clock`].
//!
//! # The scheduler loop, in outline
//!
//! ```
//! use std::time::Duration;
//! use chrono::{DateTime, Utc};
//! use dc_scheduler::{Clock, Jitter, ManualClock, MissedPolicy, Schedule};
//!
//! let at = |s: &str| s.parse::<DateTime<Utc>>().expect("instant");
//! let clock = ManualClock::new(at("2026-03-28T23:00:00Z"));
//! let schedule = Schedule::cron("30 2 * * *", Some("Europe/Berlin")).expect("valid");
//! let jitter = Jitter::new(Duration::from_secs(60));
//! // when the schedule is set, store the first next_run: 02:30 does not exist
//! // in Berlin that night, so it is 03:00 CEST
//! let next_run = schedule.next_after(clock.now()).expect("fires");
//! assert_eq!(next_run, at("2026-03-29T01:00:00Z"));
//! // at every tick of the loop
//! clock.advance(Duration::from_secs(2 * 3600));
//! let due = schedule.due(next_run, clock.now(), MissedPolicy::CatchUpOnce);
//! assert!(due.run_now); // start the run, then store the (jittered) next_run
//! let next = due.next_run.expect("fires");
//! assert_eq!(next, at("2026-03-30T00:30:00Z"));
//! let stored = jitter.apply(&schedule, next, "app-id");
//! assert!(stored >= next && stored <= next + Duration::from_secs(60));
//! ```

#![deny(missing_docs)]

pub mod clock;
pub mod cron;
pub mod jitter;
pub mod missed;
pub mod period;
pub mod schedule;
pub mod zone;

pub use chrono_tz::Tz;
pub use clock::{Clock, ManualClock, SystemClock};
pub use cron::{CronError, CronExpr, Field};
pub use jitter::Jitter;
pub use missed::{DEFAULT_GRACE, Due, MissedPolicy};
pub use period::{Period, PeriodError};
pub use schedule::{Schedule, ScheduleError};
pub use zone::{UnknownZone, parse_zone};
