//! Optional jitter: a deterministic delay added to a fire time so that many
//! apps (or hosts) on the same schedule do not all start at once.
//!
//! The delay is a pure function of a key (the app id), the fire time and the
//! schedule: every host computes the same jittered time, tests need no
//! randomness, and the scheduler can store the jittered `next_run` (or recompute
//! it). It lies in `0..=max`, whole milliseconds, and is clamped so that a
//! jittered time stays strictly before the following fire time. The hash is
//! FNV-1a (64-bit) over the key, a `0xff` separator and the fire time's Unix
//! seconds and nanoseconds (little-endian), finished with the splitmix64 mixer;
//! changing it would move every jittered run.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::schedule::Schedule;

/// A maximum delay for jittered fire times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Jitter {
    max: Duration,
}

impl Jitter {
    /// Jitter of up to `max` (zero: none).
    pub const fn new(max: Duration) -> Jitter {
        Jitter { max }
    }

    /// The largest delay.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The delay for the run of `key` planned at `fire` (a fire time of `schedule`).
    pub fn delay(&self, schedule: &Schedule, fire: DateTime<Utc>, key: &str) -> Duration {
        let max_ms = u64::try_from(self.max.as_millis()).unwrap_or(u64::MAX);
        let room_ms = schedule
            .next_after(fire)
            .and_then(|following| following.signed_duration_since(fire).num_milliseconds().checked_sub(1))
            .map_or(u64::MAX, |ms| u64::try_from(ms).unwrap_or(0));
        let limit = max_ms.min(room_ms);
        if limit == 0 {
            return Duration::ZERO;
        }
        Duration::from_millis(seed(key, fire) % (limit + 1))
    }

    /// `fire` delayed by [`Jitter::delay`].
    pub fn apply(&self, schedule: &Schedule, fire: DateTime<Utc>, key: &str) -> DateTime<Utc> {
        let delay = TimeDelta::from_std(self.delay(schedule, fire, key)).unwrap_or(TimeDelta::zero());
        fire.checked_add_signed(delay).unwrap_or(fire)
    }
}

/// The stable 64-bit hash of `key` and `fire` (see the module docs).
fn seed(key: &str, fire: DateTime<Utc>) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = FNV_OFFSET;
    let bytes = key
        .bytes()
        .chain([0xff])
        .chain(fire.timestamp().to_le_bytes())
        .chain(fire.timestamp_subsec_nanos().to_le_bytes());
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    // splitmix64 finaliser
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("test instant").to_utc()
    }

    #[test]
    fn delays_stay_within_the_maximum_and_use_it() {
        let hourly = Schedule::cron("0 * * * *", None).expect("parses");
        let jitter = Jitter::new(Duration::from_secs(300));
        let mut fire = utc("2026-01-01T00:00:00Z");
        let (mut smallest, mut largest) = (Duration::MAX, Duration::ZERO);
        for i in 0..500 {
            let d = jitter.delay(&hourly, fire, &format!("app-{}", i % 7));
            assert!(d <= Duration::from_secs(300), "{d:?} at {fire}");
            smallest = smallest.min(d);
            largest = largest.max(d);
            fire = hourly.next_after(fire).expect("fires");
        }
        assert!(smallest < Duration::from_secs(30) && largest > Duration::from_secs(270), "{smallest:?}..{largest:?}");
    }

    #[test]
    fn delays_are_deterministic_per_key_and_fire_time() {
        let schedule = Schedule::every("1h", DateTime::UNIX_EPOCH).expect("parses");
        let fire = utc("2026-05-01T12:00:00Z");
        let a = Jitter::new(Duration::from_secs(600));
        let b = Jitter::new(Duration::from_secs(600));
        assert_eq!(a.apply(&schedule, fire, "app-42"), b.apply(&schedule, fire, "app-42"));
        // pinned: another host or a later build must compute the same time
        assert_eq!(a.delay(&schedule, fire, "app-42"), Duration::from_millis(PINNED_MS));
        let delays: std::collections::HashSet<Duration> =
            (0..20).map(|i| a.delay(&schedule, fire, &format!("app-{i}"))).collect();
        assert!(delays.len() >= 18, "keys spread: {delays:?}");
        let next_hour = fire + TimeDelta::hours(1);
        assert_ne!(a.delay(&schedule, fire, "app-42"), a.delay(&schedule, next_hour, "app-42"));
    }

    /// Computed independently (a Python transcription of the documented hash).
    const PINNED_MS: u64 = 329_797;

    #[test]
    fn a_jittered_time_never_reaches_the_following_fire_time() {
        let every_minute = Schedule::every("1m", DateTime::UNIX_EPOCH).expect("parses");
        let jitter = Jitter::new(Duration::from_secs(600));
        let mut fire = utc("2026-01-01T00:00:00Z");
        let mut largest = Duration::ZERO;
        for i in 0..300 {
            let following = every_minute.next_after(fire).expect("fires");
            let jittered = jitter.apply(&every_minute, fire, &format!("app-{i}"));
            assert!(fire <= jittered && jittered < following, "{jittered} not in [{fire}, {following})");
            largest = largest.max(jitter.delay(&every_minute, fire, "x"));
            fire = following;
        }
        assert!(largest > Duration::from_secs(50), "the whole minute is used: {largest:?}");
    }

    #[test]
    fn zero_jitter_is_the_identity() {
        let schedule = Schedule::cron("*/5 * * * *", None).expect("parses");
        let fire = utc("2026-01-01T00:05:00Z");
        assert_eq!(Jitter::new(Duration::ZERO).apply(&schedule, fire, "app"), fire);
    }
}
