//! Per-client rate limits: one `governor` keyed limiter per API, keyed by the
//! token's subject (a user or client), checked by the role guard after the
//! token is accepted and before the role check and the handler. Each subject
//! may make `api.burst_per_client` requests at once and
//! `api.requests_per_second_per_client` per second after that; more are
//! answered 429 `rate_limited` with `Retry-After` (whole seconds, at least
//! 1). The clock is injectable, so tests advance time instead of sleeping.

use std::num::NonZeroU32;
use std::time::Duration;

use dc_core::settings::ApiSettings;
use governor::clock::{Clock, DefaultClock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

/// Tracked subjects above which idle ones are forgotten.
const MAX_KEYS: usize = 10_000;

/// Checks one request of a subject against its budget.
pub trait ClientLimiter: Send + Sync {
    /// `Ok` when `subject` may make a request now, else how long to wait.
    fn check(&self, subject: &str) -> Result<(), Duration>;
}

/// The keyed limiter over clock `C`.
struct Keyed<C: Clock> {
    limiter: RateLimiter<String, DashMapStateStore<String>, C, NoOpMiddleware<C::Instant>>,
    clock: C,
}

impl<C> ClientLimiter for Keyed<C>
where
    C: Clock + Send + Sync,
    C::Instant: Reference + Send + Sync,
{
    fn check(&self, subject: &str) -> Result<(), Duration> {
        if self.limiter.len() > MAX_KEYS {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(&subject.to_string()).map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

fn quota(settings: &ApiSettings) -> Quota {
    let one = NonZeroU32::MIN;
    Quota::per_second(NonZeroU32::new(settings.requests_per_second_per_client).unwrap_or(one))
        .allow_burst(NonZeroU32::new(settings.burst_per_client).unwrap_or(one))
}

/// The limiter `settings` configure, on `clock`.
pub fn with_clock<C>(settings: &ApiSettings, clock: C) -> Box<dyn ClientLimiter>
where
    C: Clock + Clone + Send + Sync + 'static,
    C::Instant: Reference + Send + Sync,
{
    Box::new(Keyed { limiter: RateLimiter::dashmap_with_clock(quota(settings), clock.clone()), clock })
}

/// The limiter `settings` configure, on the real clock.
pub fn new(settings: &ApiSettings) -> Box<dyn ClientLimiter> {
    with_clock(settings, DefaultClock::default())
}

/// Whole seconds to announce in `Retry-After` (rounded up, at least 1).
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    #[test]
    fn each_subject_has_its_own_burst_and_refills_with_time() {
        let settings = ApiSettings { requests_per_second_per_client: 2, burst_per_client: 3, ..ApiSettings::default() };
        let clock = FakeRelativeClock::default();
        let l = with_clock(&settings, clock.clone());
        for _ in 0..3 {
            assert!(l.check("ada").is_ok());
        }
        let wait = l.check("ada").expect_err("the burst is spent");
        assert_eq!(wait, Duration::from_millis(500), "one request per 1/2 s");
        assert_eq!(retry_after_secs(wait), 1);
        assert!(l.check("otto").is_ok(), "another subject has its own budget");
        clock.advance(Duration::from_millis(499));
        assert!(l.check("ada").is_err());
        clock.advance(Duration::from_millis(1));
        assert!(l.check("ada").is_ok(), "refilled");
        assert!(l.check("ada").is_err());
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
