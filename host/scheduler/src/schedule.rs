//! An app's schedule: a cron expression in a time zone, or a fixed interval
//! anchored to a stored instant, and the fire times each one produces.
//!
//! Fire times are always computed from the schedule itself, never as "now +
//! interval after the work": `next_after(t)` depends only on the schedule and
//! `t`, so a late run does not shift later ones (no drift).
//!
//! **The interval anchor.** [`Schedule::Every`] fires at `anchor + k·period`
//! for every integer `k`; the anchor only fixes the phase. dc-host stores the
//! anchor with the schedule and sets it to the instant the operator set the
//! schedule (`apps schedule APP --every 1h` at 10:17:05 runs at 11:17:05,
//! 12:17:05, ...). Changing the period sets a new anchor. Code that has no
//! stored anchor may pass [`DateTime::UNIX_EPOCH`], which aligns periods that
//! divide a day to the UTC clock (`1h` on the hour). Intervals are real elapsed
//! time: DST does not affect them.

use std::fmt;

use chrono::{DateTime, FixedOffset, Utc};
use chrono_tz::Tz;

use crate::cron::{CronError, CronExpr};
use crate::period::{Period, PeriodError};
use crate::zone::{self, UnknownZone};

/// When an app runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Schedule {
    /// A crontab(5) expression evaluated on the wall clock of `tz`.
    Cron {
        /// The parsed expression.
        expr: CronExpr,
        /// The IANA zone whose wall clock the expression reads (UTC by default).
        tz: Tz,
    },
    /// Every `period`, at `anchor + k·period`.
    Every {
        /// The interval.
        period: Period,
        /// Any instant on the grid: the time the schedule was set (see the module docs).
        anchor: DateTime<Utc>,
    },
}

/// Why a schedule given by an operator was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// A bad cron expression.
    #[error(transparent)]
    Cron(#[from] CronError),
    /// A bad interval.
    #[error(transparent)]
    Period(#[from] PeriodError),
    /// An unknown time zone.
    #[error(transparent)]
    Zone(#[from] UnknownZone),
}

impl Schedule {
    /// `--cron EXPR [--tz ZONE]`: parses the expression and the IANA zone
    /// (`None`: UTC).
    pub fn cron(expr: &str, tz: Option<&str>) -> Result<Schedule, ScheduleError> {
        let expr = CronExpr::parse(expr)?;
        let tz = match tz {
            Some(name) => zone::parse_zone(name)?,
            None => Tz::UTC,
        };
        Ok(Schedule::Cron { expr, tz })
    }

    /// `--every DURATION`: parses the period (`30s`, `5m`, `2h30m`, `1d`);
    /// `anchor` is normally the current time (see the module docs).
    pub fn every(period: &str, anchor: DateTime<Utc>) -> Result<Schedule, ScheduleError> {
        Ok(Schedule::Every { period: Period::parse(period)?, anchor })
    }

    /// The zone fire times are shown in: the cron zone, UTC for intervals.
    pub fn zone(&self) -> Tz {
        match self {
            Schedule::Cron { tz, .. } => *tz,
            Schedule::Every { .. } => Tz::UTC,
        }
    }

    /// The first fire time strictly after `after`; `None` when there is none
    /// (the calendar or the 100-year search horizon ends).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Cron { expr, tz } => zone::next_fire(expr, *tz, after),
            Schedule::Every { period, anchor } => next_on_grid(*anchor, *period, after),
        }
    }

    /// The next `n` fire times strictly after `from`, in the schedule's zone
    /// with their UTC offsets (for `schedule preview`; `to_rfc3339()` gives
    /// `2026-03-29T03:00:00+02:00`). Fewer than `n` when the schedule ends.
    pub fn upcoming(&self, from: DateTime<Utc>, n: usize) -> Vec<DateTime<FixedOffset>> {
        let tz = self.zone();
        let mut out = Vec::with_capacity(n.min(1024));
        let mut t = from;
        while out.len() < n {
            let Some(next) = self.next_after(t) else { break };
            out.push(next.with_timezone(&tz).fixed_offset());
            t = next;
        }
        out
    }
}

impl fmt::Display for Schedule {
    /// `cron "0 9 * * mon-fri" (Europe/Berlin)` or `every 2h30m`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Cron { expr, tz } => write!(f, "cron \"{expr}\" ({})", tz.name()),
            Schedule::Every { period, .. } => write!(f, "every {period}"),
        }
    }
}

/// `anchor + k·period` for the smallest integer `k` with a result after `after`.
fn next_on_grid(anchor: DateTime<Utc>, period: Period, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let elapsed = after.signed_duration_since(anchor);
    let elapsed_ns = i128::from(elapsed.num_seconds()) * 1_000_000_000 + i128::from(elapsed.subsec_nanos());
    let period_ns = i128::from(period.as_secs()) * 1_000_000_000;
    let k = elapsed_ns.div_euclid(period_ns) + 1;
    let offset_secs = i64::try_from(k * i128::from(period.as_secs())).ok()?;
    anchor.checked_add_signed(chrono::TimeDelta::try_seconds(offset_secs)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("test instant").to_utc()
    }

    #[test]
    fn intervals_never_drift_from_their_anchor() {
        let every = Schedule::every("1h", utc("2026-01-01T10:17:05Z")).expect("parses");
        // on time, late by minutes, late by hours, with sub-seconds: always the grid
        for (after, next) in [
            ("2026-01-01T10:17:05Z", "2026-01-01T11:17:05Z"),
            ("2026-01-01T11:17:04.999Z", "2026-01-01T11:17:05Z"),
            ("2026-01-01T11:29:40Z", "2026-01-01T12:17:05Z"),
            ("2026-01-01T15:02:00.5Z", "2026-01-01T15:17:05Z"),
            ("2026-01-05T00:00:00Z", "2026-01-05T00:17:05Z"),
            ("2025-12-31T23:50:00Z", "2026-01-01T00:17:05Z"), // before the anchor: same phase
        ] {
            assert_eq!(every.next_after(utc(after)), Some(utc(next)), "after {after}");
        }
        let seven = Schedule::every("7m", utc("2026-01-01T00:00:00Z")).expect("parses");
        let times = seven.upcoming(utc("2026-01-01T00:20:00Z"), 3);
        assert_eq!(
            times.iter().map(|t| t.to_rfc3339()).collect::<Vec<_>>(),
            ["2026-01-01T00:21:00+00:00", "2026-01-01T00:28:00+00:00", "2026-01-01T00:35:00+00:00"]
        );
    }

    #[test]
    fn intervals_ignore_dst() {
        // a 1h interval keeps 3600 s spacing through Berlin's spring change
        let every = Schedule::every("1h", utc("2026-03-29T00:00:00Z")).expect("parses");
        let t = every.upcoming(utc("2026-03-29T00:00:00Z"), 3);
        assert_eq!((t[1] - t[0]).num_seconds(), 3_600);
        assert_eq!((t[2] - t[1]).num_seconds(), 3_600);
    }

    #[test]
    fn upcoming_returns_times_with_the_zones_offsets() {
        let daily = Schedule::cron("30 2 * * *", Some("Europe/Berlin")).expect("parses");
        let times = daily.upcoming(utc("2026-03-27T12:00:00Z"), 3);
        assert_eq!(
            times.iter().map(|t| t.to_rfc3339()).collect::<Vec<_>>(),
            ["2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]
        );
        assert_eq!(times[1].offset().local_minus_utc(), 7_200);
        let ny = Schedule::cron("0 9 * * mon-fri", Some("America/New_York")).expect("parses");
        let times = ny.upcoming(utc("2026-03-06T15:00:00Z"), 2);
        assert_eq!(
            times.iter().map(|t| t.to_rfc3339()).collect::<Vec<_>>(),
            ["2026-03-09T09:00:00-04:00", "2026-03-10T09:00:00-04:00"]
        );
        let utc_default = Schedule::cron("@daily", None).expect("parses");
        assert_eq!(utc_default.upcoming(utc("2026-01-01T00:00:00Z"), 1)[0].to_rfc3339(), "2026-01-02T00:00:00+00:00");
        assert!(utc_default.upcoming(utc("2026-01-01T00:00:00Z"), 0).is_empty());
    }

    #[test]
    fn operator_strings_are_checked() {
        assert_eq!(
            Schedule::cron("0 25 * * *", None).expect_err("bad hour").to_string(),
            "cron field 2 (hour) \"25\": out of range 0-23"
        );
        assert!(Schedule::cron("0 2 * * *", Some("Mars/Olympus")).expect_err("bad zone").to_string().contains("Mars"));
        assert_eq!(
            Schedule::every("0m", DateTime::UNIX_EPOCH).expect_err("zero").to_string(),
            "interval \"0m\" is zero: it must be at least 1s"
        );
        let s = Schedule::cron("0 9 * * mon-fri", Some("Europe/Berlin")).expect("parses");
        assert_eq!(s.to_string(), "cron \"0 9 * * mon-fri\" (Europe/Berlin)");
        assert_eq!(Schedule::every("150m", DateTime::UNIX_EPOCH).expect("parses").to_string(), "every 2h30m");
    }
}
