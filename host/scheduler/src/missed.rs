//! Deciding, at a tick of the scheduler loop, whether an app runs now, and
//! which `next_run` to store: on-time runs, and the missed-run policy for fire
//! times that passed while the host was down.
//!
//! A planned moment (the stored `next_run`, or any later fire time) is **on
//! time** when it lies within the grace window before now ([`DEFAULT_GRACE`]);
//! an on-time moment runs under either policy. When every planned moment that
//! has passed is older than that, the host was down (or stalled) across them:
//! [`MissedPolicy::Skip`] runs nothing and waits for the next future fire time;
//! [`MissedPolicy::CatchUpOnce`] runs once now for all of them. Either way the
//! returned `next_run` is the next fire time after now, computed from the
//! schedule, so the loop never bursts and never drifts.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::schedule::Schedule;

/// How late a planned run may start and still count as on time: 60 seconds.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(60);

/// Missed runs are counted up to this many (a week of per-second fire times
/// is reported as 1000).
pub const MISSED_COUNT_CAP: u32 = 1000;

/// What to do about fire times that passed while the host was not running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MissedPolicy {
    /// Do not run for them; continue at the next future fire time (cron's behaviour).
    #[default]
    Skip,
    /// Run once now for all of them (never one run per missed time), then
    /// continue at the next future fire time (anacron's behaviour).
    CatchUpOnce,
}

/// An unknown missed-run policy name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown missed-run policy \"{0}\": use skip or catch-up-once")]
pub struct UnknownPolicy(pub String);

impl MissedPolicy {
    /// The stable name: `skip` or `catch-up-once`.
    pub fn as_str(self) -> &'static str {
        match self {
            MissedPolicy::Skip => "skip",
            MissedPolicy::CatchUpOnce => "catch-up-once",
        }
    }
}

impl fmt::Display for MissedPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for MissedPolicy {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "skip" => Ok(MissedPolicy::Skip),
            "catch-up-once" => Ok(MissedPolicy::CatchUpOnce),
            _ => Err(UnknownPolicy(s.to_string())),
        }
    }
}

/// The decision for one app at one tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// Start a run now.
    pub run_now: bool,
    /// Planned moments that passed without a run of their own (skipped, or
    /// folded into this catch-up run), counted up to [`MISSED_COUNT_CAP`].
    pub missed: u32,
    /// The `next_run` to store (before jitter); `None` when the schedule never
    /// fires again.
    pub next_run: Option<DateTime<Utc>>,
}

impl Schedule {
    /// Decides at `now` about the stored `last_planned` (the app's `next_run`,
    /// jittered or not) with [`DEFAULT_GRACE`]. Before `last_planned` nothing
    /// is due and `next_run` stays `last_planned`.
    pub fn due(&self, last_planned: DateTime<Utc>, now: DateTime<Utc>, policy: MissedPolicy) -> Due {
        self.due_with_grace(last_planned, now, policy, DEFAULT_GRACE)
    }

    /// [`Schedule::due`] with an explicit grace window.
    pub fn due_with_grace(
        &self,
        last_planned: DateTime<Utc>,
        now: DateTime<Utc>,
        policy: MissedPolicy,
        grace: Duration,
    ) -> Due {
        if now < last_planned {
            return Due { run_now: false, missed: 0, next_run: Some(last_planned) };
        }
        let grace = TimeDelta::from_std(grace).unwrap_or(TimeDelta::MAX);
        let window_start = now.checked_sub_signed(grace).unwrap_or(DateTime::<Utc>::MIN_UTC);
        let on_time = last_planned >= window_start
            || window_start
                .checked_sub_signed(TimeDelta::nanoseconds(1))
                .and_then(|t| self.next_after(t))
                .is_some_and(|f| f <= now);
        let passed = self.count_passed(last_planned, now);
        Due {
            run_now: on_time || policy == MissedPolicy::CatchUpOnce,
            missed: passed.saturating_sub(u32::from(on_time)),
            next_run: self.next_after(now),
        }
    }

    /// `last_planned` plus the fire times in `(last_planned, now]`, capped.
    fn count_passed(&self, last_planned: DateTime<Utc>, now: DateTime<Utc>) -> u32 {
        let mut count = 1;
        let mut t = last_planned;
        while count < MISSED_COUNT_CAP {
            match self.next_after(t) {
                Some(next) if next <= now => {
                    count += 1;
                    t = next;
                }
                _ => break,
            }
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("test instant").to_utc()
    }

    fn hourly() -> Schedule {
        Schedule::every("1h", utc("2026-01-01T10:00:00Z")).expect("parses")
    }

    fn due(s: &Schedule, last: &str, now: &str, policy: MissedPolicy) -> (bool, u32, Option<String>) {
        let d = s.due(utc(last), utc(now), policy);
        (d.run_now, d.missed, d.next_run.map(|t| t.to_rfc3339()))
    }

    #[test]
    fn before_the_planned_time_nothing_is_due() {
        for policy in [MissedPolicy::Skip, MissedPolicy::CatchUpOnce] {
            assert_eq!(
                due(&hourly(), "2026-01-01T11:00:00Z", "2026-01-01T10:59:59Z", policy),
                (false, 0, Some("2026-01-01T11:00:00+00:00".into()))
            );
        }
    }

    #[test]
    fn an_on_time_run_runs_under_both_policies_and_plans_the_next_grid_time() {
        for policy in [MissedPolicy::Skip, MissedPolicy::CatchUpOnce] {
            assert_eq!(
                due(&hourly(), "2026-01-01T11:00:00Z", "2026-01-01T11:00:45Z", policy),
                (true, 0, Some("2026-01-01T12:00:00+00:00".into()))
            );
        }
    }

    #[test]
    fn host_down_across_several_fire_times() {
        // down across 11:00, 12:00, 13:00 and 14:00; back at 14:30
        assert_eq!(
            due(&hourly(), "2026-01-01T11:00:00Z", "2026-01-01T14:30:00Z", MissedPolicy::Skip),
            (false, 4, Some("2026-01-01T15:00:00+00:00".into()))
        );
        assert_eq!(
            due(&hourly(), "2026-01-01T11:00:00Z", "2026-01-01T14:30:00Z", MissedPolicy::CatchUpOnce),
            (true, 4, Some("2026-01-01T15:00:00+00:00".into()))
        );
        // never a burst: with the stored next_run, the next tick does nothing
        assert_eq!(
            due(&hourly(), "2026-01-01T15:00:00Z", "2026-01-01T14:30:01Z", MissedPolicy::CatchUpOnce),
            (false, 0, Some("2026-01-01T15:00:00+00:00".into()))
        );
    }

    #[test]
    fn a_fire_time_that_just_passed_is_on_time_even_after_downtime() {
        // back at 14:00:20: 14:00 runs (on time); 11:00-13:00 were missed
        assert_eq!(
            due(&hourly(), "2026-01-01T11:00:00Z", "2026-01-01T14:00:20Z", MissedPolicy::Skip),
            (true, 3, Some("2026-01-01T15:00:00+00:00".into()))
        );
    }

    #[test]
    fn a_single_missed_daily_run() {
        let daily = Schedule::cron("0 9 * * *", Some("Europe/Berlin")).expect("parses");
        // down from 07:00 to 11:00 UTC on Jan 5: the 09:00 CET (08:00Z) run was missed
        assert_eq!(
            due(&daily, "2026-01-05T08:00:00Z", "2026-01-05T11:00:00Z", MissedPolicy::Skip),
            (false, 1, Some("2026-01-06T08:00:00+00:00".into()))
        );
        assert_eq!(
            due(&daily, "2026-01-05T08:00:00Z", "2026-01-05T11:00:00Z", MissedPolicy::CatchUpOnce),
            (true, 1, Some("2026-01-06T08:00:00+00:00".into()))
        );
        let lenient = daily.due_with_grace(
            utc("2026-01-05T08:00:00Z"),
            utc("2026-01-05T11:00:00Z"),
            MissedPolicy::Skip,
            Duration::from_secs(4 * 3600),
        );
        assert!(lenient.run_now && lenient.missed == 0);
    }

    #[test]
    fn a_jittered_planned_time_is_judged_from_itself() {
        // stored next_run 11:07 (jittered from 11:00): at 11:07:30 it is on time
        assert_eq!(
            due(&hourly(), "2026-01-01T11:07:00Z", "2026-01-01T11:07:30Z", MissedPolicy::Skip),
            (true, 0, Some("2026-01-01T12:00:00+00:00".into()))
        );
    }

    #[test]
    fn missed_counts_are_capped() {
        let every_second = Schedule::cron("* * * * * *", None).expect("parses");
        let d = every_second.due(utc("2026-01-01T00:00:00Z"), utc("2026-01-08T00:00:00Z"), MissedPolicy::Skip);
        assert_eq!(d.missed, MISSED_COUNT_CAP - 1); // the last second before now is on time
        assert!(d.run_now);
        assert_eq!(d.next_run, Some(utc("2026-01-08T00:00:01Z")));
    }

    #[test]
    fn policies_have_stable_names() {
        for p in [MissedPolicy::Skip, MissedPolicy::CatchUpOnce] {
            assert_eq!(p.as_str().parse::<MissedPolicy>(), Ok(p));
        }
        assert_eq!("CATCH_UP_ONCE".parse::<MissedPolicy>(), Ok(MissedPolicy::CatchUpOnce));
        assert_eq!(
            "burst".parse::<MissedPolicy>().expect_err("unknown").to_string(),
            "unknown missed-run policy \"burst\": use skip or catch-up-once"
        );
    }
}
