//! Time zones: IANA names, and turning a cron expression's wall-clock matches
//! into instants across daylight-saving changes.
//!
//! A cron schedule is evaluated on the wall clock of its zone (default UTC).
//! Wall-clock times and instants correspond one to one except at two moments a
//! year, where dc-host follows Vixie cron / cronie. A job is a **wildcard job**
//! when its minute or hour field starts with `*` ([`CronExpr::is_wildcard_time`]),
//! otherwise a **fixed-time job**:
//!
//! | | fixed-time job (`30 2 * * *`) | wildcard job (`0 * * * *`, `*/15 2 * * *`) |
//! |---|---|---|
//! | spring forward: the wall time does not exist (Berlin 2026-03-29 02:30) | runs **once at the first instant after the gap** (03:00 CEST), however many of its times fell in the gap | those times are skipped; it keeps running every real interval |
//! | fall back: the wall time happens twice (Berlin 2026-10-25 02:30) | runs **once, at the first occurrence** (02:30 CEST) | runs at **both** occurrences, so `0 * * * *` runs every real hour |
//!
//! A seconds field does not make a job a wildcard job. A gap of more than six
//! hours (only date-line moves do that, like Samoa's skipped 2011-12-30) skips
//! fixed-time jobs too. Intervals ([`crate::Schedule::Every`]) are real elapsed
//! time and ignore zones altogether.

use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, TimeDelta, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

use crate::cron::CronExpr;

/// An unknown time-zone name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown time zone \"{0}\": use an IANA name such as Europe/Berlin, America/New_York or UTC")]
pub struct UnknownZone(pub String);

/// Parses an IANA time-zone name (`Europe/Berlin`, `UTC`), exactly as spelled
/// in the tz database.
pub fn parse_zone(name: &str) -> Result<Tz, UnknownZone> {
    name.trim().parse::<Tz>().map_err(|_| UnknownZone(name.to_string()))
}

/// How far apart two instants must be for their walls to be out of order, at
/// most: a cron time later on the wall than another can be earlier in real time
/// only across a fall-back within this window (offsets lie in -12h..+14h).
const WINDOW: TimeDelta = TimeDelta::hours(28);

/// The latest wall-clock date searched, relative to `after`.
const HORIZON: TimeDelta = TimeDelta::days(366 * 100);

/// The first fire time of `cron` in `tz` strictly after `after`, following the
/// DST rules in the module docs. `None` when it never fires again.
pub(crate) fn next_fire(cron: &CronExpr, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let wildcard = cron.is_wildcard_time();
    let wall_after = after.with_timezone(&tz).naive_local().with_nanosecond(0)?;
    // a wall time before `wall_after` can still be a later instant when the
    // clock is about to go back: start that much earlier
    let back = offset_spread(tz, after, after.checked_add_signed(WINDOW)?);
    let mut from = wall_after.checked_sub_signed(back)?;
    let horizon = wall_after.checked_add_signed(HORIZON)?;
    let mut best: Option<DateTime<Utc>> = None;
    let mut stop: Option<NaiveDateTime> = None;
    while let Some(wall) = cron.next_wall(from) {
        if wall > horizon || stop.is_some_and(|s| wall > s) {
            break;
        }
        for instant in instants(tz, wall, wildcard).into_iter().flatten() {
            if instant > after && best.is_none_or(|b| instant < b) {
                best = Some(instant);
            }
        }
        if let (Some(b), None) = (best, stop) {
            // a later wall time can be an earlier instant only across a fall-back
            // just before `b`: look that far further on the wall
            let rise = offset_spread(tz, b.checked_sub_signed(WINDOW)?, b);
            let wall_b = b.with_timezone(&tz).naive_local();
            stop = Some(wall.max(wall_b).checked_add_signed(rise)?);
        }
        from = wall.checked_add_signed(TimeDelta::seconds(1))?;
    }
    best
}

/// The instants a matching wall time fires at (see the table in the module docs).
fn instants(tz: Tz, wall: NaiveDateTime, wildcard: bool) -> [Option<DateTime<Utc>>; 2] {
    match tz.from_local_datetime(&wall) {
        LocalResult::Single(t) => [Some(t.to_utc()), None],
        LocalResult::Ambiguous(early, late) => [Some(early.to_utc()), wildcard.then(|| late.to_utc())],
        LocalResult::None if wildcard => [None, None],
        LocalResult::None => [first_instant_after_gap(tz, wall), None],
    }
}

/// For a wall time inside a spring-forward gap: the instant the clock jumps,
/// i.e. the first instant whose wall time is later than `wall`.
fn first_instant_after_gap(tz: Tz, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
    let six = TimeDelta::hours(6);
    let mut lo = tz.from_local_datetime(&wall.checked_sub_signed(six)?).earliest()?.timestamp();
    let mut hi = tz.from_local_datetime(&wall.checked_add_signed(six)?).latest()?.timestamp();
    let wall_at = |secs: i64| DateTime::from_timestamp(secs, 0).map(|t| t.with_timezone(&tz).naive_local());
    // invariant: wall(lo) < wall < wall(hi); transitions fall on whole seconds
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if wall_at(mid)? > wall {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    DateTime::from_timestamp(hi, 0)
}

/// Largest minus smallest UTC offset of `tz` between two instants (probed
/// every 30 minutes), as a duration; zero when no transition lies between.
fn offset_spread(tz: Tz, from: DateTime<Utc>, to: DateTime<Utc>) -> TimeDelta {
    let offset = |t: DateTime<Utc>| i64::from(tz.offset_from_utc_datetime(&t.naive_utc()).fix().local_minus_utc());
    let (mut min, mut max) = (offset(to), offset(to));
    let mut t = from;
    while t < to {
        let o = offset(t);
        min = min.min(o);
        max = max.max(o);
        t += TimeDelta::minutes(30);
    }
    TimeDelta::seconds(max - min)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("test instant").to_utc()
    }

    /// The next `n` fire times after `from`, as RFC 3339 in the zone.
    fn fires(expr: &str, zone: &str, from: &str, n: usize) -> Vec<String> {
        let cron = CronExpr::parse(expr).expect("parses");
        let tz = parse_zone(zone).expect("zone");
        let mut t = utc(from);
        (0..n)
            .map(|_| {
                t = next_fire(&cron, tz, t).expect("fires");
                t.with_timezone(&tz).to_rfc3339()
            })
            .collect()
    }

    #[test]
    fn zones_are_iana_names() {
        assert_eq!(parse_zone("Europe/Berlin"), Ok(chrono_tz::Europe::Berlin));
        assert_eq!(parse_zone("UTC"), Ok(chrono_tz::UTC));
        assert_eq!(
            parse_zone("Europe/Berln").expect_err("unknown").to_string(),
            "unknown time zone \"Europe/Berln\": use an IANA name such as Europe/Berlin, America/New_York or UTC"
        );
    }

    #[test]
    fn berlin_spring_forward_daily_0230_runs_once_at_0300() {
        assert_eq!(
            fires("30 2 * * *", "Europe/Berlin", "2026-03-27T12:00:00Z", 3),
            ["2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]
        );
        // several fixed times in the gap still give one run
        assert_eq!(
            fires("0,30 2 * * *", "Europe/Berlin", "2026-03-28T23:00:00Z", 3),
            ["2026-03-29T03:00:00+02:00", "2026-03-30T02:00:00+02:00", "2026-03-30T02:30:00+02:00"]
        );
    }

    #[test]
    fn berlin_fall_back_daily_0230_runs_once_at_the_first_occurrence() {
        assert_eq!(
            fires("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", 2),
            ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]
        );
        // asked from inside the repeated hour (02:10 CET, after the first 02:30), no second run
        assert_eq!(fires("30 2 * * *", "Europe/Berlin", "2026-10-25T01:10:00Z", 1), ["2026-10-26T02:30:00+01:00"]);
    }

    #[test]
    fn berlin_hourly_runs_every_real_hour_across_both_changes() {
        assert_eq!(
            fires("0 * * * *", "Europe/Berlin", "2026-03-28T23:30:00Z", 3),
            ["2026-03-29T01:00:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-29T04:00:00+02:00"]
        );
        assert_eq!(
            fires("0 * * * *", "Europe/Berlin", "2026-10-24T23:30:00Z", 4),
            [
                "2026-10-25T02:00:00+02:00",
                "2026-10-25T02:00:00+01:00",
                "2026-10-25T03:00:00+01:00",
                "2026-10-25T04:00:00+01:00"
            ]
        );
        // asked from inside the first 02:xx hour, a 10-minute job finishes that hour,
        // then runs through the repeated one
        assert_eq!(
            fires("*/10 * * * *", "Europe/Berlin", "2026-10-25T00:40:00Z", 3),
            ["2026-10-25T02:50:00+02:00", "2026-10-25T02:00:00+01:00", "2026-10-25T02:10:00+01:00"]
        );
        // started inside the first 02:xx hour: the repeated 02:00 still comes
        assert_eq!(
            fires("0 * * * *", "Europe/Berlin", "2026-10-25T00:40:00Z", 2),
            ["2026-10-25T02:00:00+01:00", "2026-10-25T03:00:00+01:00"]
        );
    }

    #[test]
    fn wildcard_times_in_the_gap_are_skipped_not_moved() {
        assert_eq!(
            fires("30 * * * *", "Europe/Berlin", "2026-03-29T00:00:00Z", 2),
            ["2026-03-29T01:30:00+01:00", "2026-03-29T03:30:00+02:00"]
        );
        assert_eq!(
            fires("*/30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z", 3),
            ["2026-03-30T02:00:00+02:00", "2026-03-30T02:30:00+02:00", "2026-03-31T02:00:00+02:00"]
        );
    }

    #[test]
    fn new_york_spring_forward_and_fall_back() {
        // 2026-03-08: 02:00 EST -> 03:00 EDT
        assert_eq!(
            fires("30 2 * * *", "America/New_York", "2026-03-07T12:00:00Z", 3),
            ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00", "2026-03-10T02:30:00-04:00"]
        );
        assert_eq!(
            fires("0 * * * *", "America/New_York", "2026-03-08T05:30:00Z", 3),
            ["2026-03-08T01:00:00-05:00", "2026-03-08T03:00:00-04:00", "2026-03-08T04:00:00-04:00"]
        );
        // 2026-11-01: 02:00 EDT -> 01:00 EST; 02:30 exists once, 01:30 twice
        assert_eq!(
            fires("30 2 * * *", "America/New_York", "2026-10-31T12:00:00Z", 2),
            ["2026-11-01T02:30:00-05:00", "2026-11-02T02:30:00-05:00"]
        );
        assert_eq!(
            fires("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z", 2),
            ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]
        );
        assert_eq!(
            fires("0 * * * *", "America/New_York", "2026-11-01T04:30:00Z", 3),
            ["2026-11-01T01:00:00-04:00", "2026-11-01T01:00:00-05:00", "2026-11-01T02:00:00-05:00"]
        );
    }

    #[test]
    fn every_second_job_crosses_the_gap_without_a_burst() {
        // 01:59:58 CET, 01:59:59 CET, then 03:00:00 CEST: one real second apart each
        assert_eq!(
            fires("* * * * * *", "Europe/Berlin", "2026-03-29T00:59:57Z", 3),
            ["2026-03-29T01:59:58+01:00", "2026-03-29T01:59:59+01:00", "2026-03-29T03:00:00+02:00"]
        );
    }
}
