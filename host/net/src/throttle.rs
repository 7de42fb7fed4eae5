//! The politeness algorithm of one domain, pure and clocked from outside:
//! every call takes `now` (time since the owner's epoch), so it is tested
//! without sleeping. The limiter (`limiter`) keeps one [`Throttle`] per domain
//! and does the waiting.
//!
//! - **Rate**: a `governor` GCRA cell limiter at the configured requests per
//!   second (burst 1) is the hard ceiling. Below it runs the adaptive rate:
//! - **Tightening** (multiplicative decrease): a 429 or 503 halves the
//!   domain's current rate (down to 1/32 of the configured one) and blocks
//!   the domain until its `Retry-After` has passed (capped at `max_block`;
//!   without one, for one interval of the new rate).
//! - **Relaxing** (additive increase): every answer that is not an error adds
//!   1/20 of the configured rate back, so 20 good answers in a row restore it
//!   from nothing and 10 restore it from half.
//! - **Latency** (Scrapy's AutoThrottle): the rate is further capped at
//!   `target_concurrency / latency`, with latency an exponential moving average
//!   of the time to response headers, so a slow server gets on average
//!   `target_concurrency` requests in flight, not more.
//! - **Concurrency**: a counting semaphore of `concurrency` permits.
//! - **Crawl-delay** from robots.txt caps the rate at one request per delay.
//!
//! Without a configured rate (loopback hosts by default) only the
//! concurrency limit, `Retry-After` blocks and a robots.txt crawl-delay apply.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// The limits of one domain.
#[derive(Debug, Clone, PartialEq)]
pub struct Tuning {
    /// Requests per second at most; None: no rate limit.
    pub rps: Option<f64>,
    /// Requests in flight at most.
    pub concurrency: u32,
    /// Tighten on 429/503 and relax on success, capped by latency.
    pub adaptive: bool,
    /// AutoThrottle's target: the rate is capped at this / latency (0: off).
    pub target_concurrency: f64,
    /// The longest a `Retry-After` blocks the domain.
    pub max_block: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning { rps: Some(4.0), concurrency: 4, adaptive: true, target_concurrency: 4.0, max_block: MAX_BLOCK }
    }
}

/// The default cap on a `Retry-After` block.
pub const MAX_BLOCK: Duration = Duration::from_secs(300);

/// The adaptive rate never falls below the configured rate divided by this.
pub const FLOOR_DIVISOR: f64 = 32.0;
/// The share of the configured rate one good answer adds back.
pub const RELAX_STEP: f64 = 1.0 / 20.0;
/// Weight of a new latency sample in the moving average.
const LATENCY_WEIGHT: f64 = 0.25;
/// The block after a 429/503 without `Retry-After` on a domain without a rate.
const DEFAULT_BLOCK: Duration = Duration::from_secs(1);

/// How a request ended, as the limiter learns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Outcome {
    /// The response status; None: no response (error, timeout, abandoned).
    pub status: Option<u16>,
    /// Time to the response headers.
    pub latency: Duration,
    /// The server's `Retry-After`, read as a wait.
    pub retry_after: Option<Duration>,
    /// No response because the connection failed or timed out: a failure
    /// for the domain's circuit breaker (other errors are not).
    pub failed: bool,
}

/// What of a domain's state outlives the process that serves permits (the
/// permit server saves it on change, a successor loads it): the adaptive
/// rate, the latency average and the end of a `Retry-After` block. Times are
/// since the owner's epoch, like every time the throttle is told.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Saved {
    /// The adaptive rate (None: the domain has no rate).
    pub rate: Option<f64>,
    /// The latency moving average.
    pub latency: Option<Duration>,
    /// No grant before this.
    pub blocked_until: Duration,
}

/// What the throttle says to a request that wants to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go; the caller holds one of the domain's concurrency permits until
    /// [`Throttle::release`].
    Granted,
    /// Ask again at this time (since the epoch).
    WaitUntil(Duration),
    /// Every concurrency permit is taken: ask again after a release.
    Full,
}

/// A `governor` clock that reads the time the throttle was last told.
#[derive(Debug, Clone, Default)]
struct Told(Arc<AtomicU64>);

impl Told {
    fn set(&self, now: Duration) {
        self.0.store(u64::try_from(now.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }
}

impl Clock for Told {
    type Instant = Duration;

    fn now(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::Relaxed))
    }
}

/// The politeness state of one domain.
pub struct Throttle {
    tuning: Tuning,
    clock: Told,
    ceiling: Option<RateLimiter<NotKeyed, InMemoryState, Told, NoOpMiddleware<Duration>>>,
    /// The adaptive rate (≤ the configured one); None without a rate.
    rate: Option<f64>,
    crawl_delay: Option<Duration>,
    latency: Option<Duration>,
    /// No grant before this (the adaptive spacing).
    next_at: Duration,
    blocked_until: Duration,
    in_flight: u32,
}

impl std::fmt::Debug for Throttle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Throttle")
            .field("tuning", &self.tuning)
            .field("rate", &self.rate)
            .field("crawl_delay", &self.crawl_delay)
            .field("latency", &self.latency)
            .field("blocked_until", &self.blocked_until)
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

fn per(rate: f64) -> Duration {
    Duration::from_secs_f64(1.0 / rate)
}

impl Throttle {
    /// A throttle with `tuning`, created at `now`.
    pub fn new(tuning: Tuning, now: Duration) -> Throttle {
        let clock = Told::default();
        clock.set(now);
        let rps = tuning.rps.filter(|r| r.is_finite() && *r > 0.0);
        let ceiling = rps
            .and_then(|r| Quota::with_period(per(r)))
            .map(|q| RateLimiter::direct_with_clock(q.allow_burst(NonZeroU32::MIN), clock.clone()));
        Throttle {
            tuning: Tuning { rps, ..tuning },
            clock,
            ceiling,
            rate: rps,
            crawl_delay: None,
            latency: None,
            next_at: Duration::ZERO,
            blocked_until: Duration::ZERO,
            in_flight: 0,
        }
    }

    /// The rate requests go at now: the adaptive rate, capped by latency and
    /// crawl-delay. None: unlimited.
    pub fn effective_rate(&self) -> Option<f64> {
        let mut r = self.rate;
        let cap = |r: Option<f64>, c: f64| Some(r.map_or(c, |r| r.min(c)));
        if self.tuning.adaptive
            && self.tuning.rps.is_some()
            && self.tuning.target_concurrency > 0.0
            && let Some(l) = self.latency.filter(|l| !l.is_zero())
        {
            r = cap(r, self.tuning.target_concurrency / l.as_secs_f64());
        }
        if let Some(d) = self.crawl_delay.filter(|d| !d.is_zero()) {
            r = cap(r, 1.0 / d.as_secs_f64());
        }
        r
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// Until when a `Retry-After` blocks the domain (since the epoch).
    pub fn blocked_until(&self) -> Duration {
        self.blocked_until
    }

    /// The latency moving average.
    pub fn latency(&self) -> Option<Duration> {
        self.latency
    }

    /// Applies robots.txt's `Crawl-delay` (None: none).
    pub fn set_crawl_delay(&mut self, delay: Option<Duration>) {
        self.crawl_delay = delay;
    }

    /// May a request go at `now`? On [`Decision::Granted`] it holds a
    /// concurrency permit until [`Throttle::release`].
    pub fn try_acquire(&mut self, now: Duration) -> Decision {
        if now < self.blocked_until {
            return Decision::WaitUntil(self.blocked_until);
        }
        if self.in_flight >= self.tuning.concurrency.max(1) {
            return Decision::Full;
        }
        if now < self.next_at {
            return Decision::WaitUntil(self.next_at);
        }
        if let Some(ceiling) = &self.ceiling {
            self.clock.set(now);
            if let Err(not_until) = ceiling.check() {
                return Decision::WaitUntil(now + not_until.wait_time_from(now));
            }
        }
        self.in_flight += 1;
        if let Some(r) = self.effective_rate() {
            self.next_at = now + per(r);
        }
        Decision::Granted
    }

    /// No rate and no concurrency limit apply (none configured, no
    /// crawl-delay): a request needs no permit to hold, only a look at the
    /// `Retry-After` block ([`Throttle::try_pass`]).
    pub fn unlimited(&self) -> bool {
        self.tuning.concurrency == u32::MAX && self.effective_rate().is_none()
    }

    /// May a request go at `now` without holding a permit? Only a
    /// `Retry-After` block stops it; nothing is counted in flight, and its
    /// outcome is told with [`Throttle::report`] (if at all). For
    /// [`Throttle::unlimited`] domains.
    pub fn try_pass(&self, now: Duration) -> Decision {
        if now < self.blocked_until { Decision::WaitUntil(self.blocked_until) } else { Decision::Granted }
    }

    /// A granted request ended at `now` with `outcome`: its permit is given
    /// back and the rate adapts. True: the back-off changed (a 429/503
    /// tightened the domain, or an answer relaxed a tightened rate), so
    /// [`Throttle::saved`] says something new.
    pub fn release(&mut self, now: Duration, outcome: &Outcome) -> bool {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.report(now, outcome)
    }

    /// The outcome of a request that held no permit ([`Throttle::try_pass`]):
    /// the rate adapts as on [`Throttle::release`]. True: the back-off changed.
    pub fn report(&mut self, now: Duration, outcome: &Outcome) -> bool {
        match outcome.status {
            Some(429 | 503) => {
                self.tighten(now, outcome.retry_after);
                true
            }
            Some(s) if s < 500 => {
                let before = self.rate;
                self.relax(outcome.latency);
                before != self.rate
            }
            // other server errors, failures and abandoned requests say
            // nothing about how fast we may go
            _ => false,
        }
    }

    /// The state worth keeping at `now`; None: nothing (no block ahead and
    /// the rate is the configured one), a successor starts afresh.
    pub fn saved(&self, now: Duration) -> Option<Saved> {
        let tightened = matches!((self.rate, self.tuning.rps), (Some(r), Some(c)) if r < c);
        (tightened || self.blocked_until > now).then_some(Saved {
            rate: self.rate,
            latency: self.latency,
            blocked_until: self.blocked_until,
        })
    }

    /// Takes over `saved` (from a previous server) at `now`: the block and
    /// the tightened rate hold on, within this tuning (a rate never above the
    /// configured one; none when the domain has none now).
    pub fn restore(&mut self, saved: &Saved, now: Duration) {
        if let (Some(configured), Some(rate)) = (self.tuning.rps, saved.rate.filter(|r| r.is_finite() && *r > 0.0)) {
            let rate = rate.clamp(configured / FLOOR_DIVISOR, configured);
            self.rate = Some(rate);
            self.next_at = self.next_at.max(now + per(rate));
        }
        if self.tuning.adaptive {
            self.latency = saved.latency.or(self.latency);
        }
        let cap = now + self.tuning.max_block;
        self.blocked_until = self.blocked_until.max(saved.blocked_until.min(cap));
    }

    fn tighten(&mut self, now: Duration, retry_after: Option<Duration>) {
        let mut block = retry_after;
        if self.tuning.adaptive
            && let (Some(configured), Some(current)) = (self.tuning.rps, self.effective_rate())
        {
            let halved = (current / 2.0).max(configured / FLOOR_DIVISOR);
            self.rate = Some(halved);
            self.next_at = self.next_at.max(now + per(halved));
            block = block.or(Some(per(halved)));
        }
        let block = block.unwrap_or(DEFAULT_BLOCK).min(self.tuning.max_block);
        self.blocked_until = self.blocked_until.max(now + block);
    }

    fn relax(&mut self, latency: Duration) {
        if !self.tuning.adaptive {
            return;
        }
        self.latency = Some(match self.latency {
            None => latency,
            Some(avg) => avg.mul_f64(1.0 - LATENCY_WEIGHT) + latency.mul_f64(LATENCY_WEIGHT),
        });
        if let (Some(configured), Some(rate)) = (self.tuning.rps, self.rate) {
            self.rate = Some((rate + configured * RELAX_STEP).min(configured));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn ok(latency_ms: u64) -> Outcome {
        Outcome { status: Some(200), latency: ms(latency_ms), retry_after: None, failed: false }
    }

    fn throttled(status: u16, retry_after: Option<Duration>) -> Outcome {
        Outcome { status: Some(status), latency: ms(1), retry_after, failed: false }
    }

    fn tuning(rps: f64, concurrency: u32) -> Tuning {
        Tuning { rps: Some(rps), concurrency, ..Tuning::default() }
    }

    /// Grants at `now`, or says when to ask again.
    fn next_grant(t: &mut Throttle, now: Duration) -> Duration {
        match t.try_acquire(now) {
            Decision::Granted => now,
            Decision::WaitUntil(at) => {
                assert!(at > now, "a wait lies in the future");
                assert_eq!(t.try_acquire(at), Decision::Granted, "granted when the wait is over");
                at
            }
            Decision::Full => panic!("no permit is held"),
        }
    }

    #[test]
    fn the_configured_rate_spaces_grants() {
        let mut t = Throttle::new(tuning(10.0, 8), Duration::ZERO);
        let mut now = Duration::ZERO;
        let mut grants = vec![];
        for _ in 0..5 {
            now = next_grant(&mut t, now);
            grants.push(now);
            t.release(now, &ok(1));
        }
        assert_eq!(grants, vec![ms(0), ms(100), ms(200), ms(300), ms(400)]);
    }

    #[test]
    fn concurrency_is_a_semaphore() {
        let mut t = Throttle::new(Tuning { rps: None, concurrency: 2, ..Tuning::default() }, Duration::ZERO);
        assert_eq!(t.try_acquire(MS), Decision::Granted);
        assert_eq!(t.try_acquire(MS), Decision::Granted);
        assert_eq!(t.try_acquire(MS), Decision::Full);
        t.release(ms(2), &ok(1));
        assert_eq!(t.in_flight(), 1);
        assert_eq!(t.try_acquire(ms(2)), Decision::Granted);
    }

    #[test]
    fn a_429_halves_the_rate_and_blocks_until_retry_after() {
        let mut t = Throttle::new(tuning(10.0, 4), Duration::ZERO);
        assert_eq!(t.try_acquire(Duration::ZERO), Decision::Granted);
        t.release(ms(20), &throttled(429, Some(Duration::from_secs(3))));
        assert_eq!(t.effective_rate(), Some(5.0));
        assert_eq!(t.try_acquire(ms(500)), Decision::WaitUntil(ms(3020)), "blocked for Retry-After");
        assert_eq!(t.try_acquire(ms(3020)), Decision::Granted);
        // now at the halved rate: 200 ms apart
        assert_eq!(t.try_acquire(ms(3100)), Decision::WaitUntil(ms(3220)));
    }

    #[test]
    fn a_503_without_retry_after_blocks_one_interval_and_retry_after_is_capped() {
        let mut t = Throttle::new(tuning(4.0, 4), Duration::ZERO);
        t.try_acquire(Duration::ZERO);
        t.release(ms(10), &throttled(503, None));
        assert_eq!(t.effective_rate(), Some(2.0));
        assert_eq!(t.blocked_until(), ms(510), "one interval of the halved rate");
        let mut t = Throttle::new(Tuning { max_block: Duration::from_secs(60), ..tuning(4.0, 4) }, Duration::ZERO);
        t.try_acquire(Duration::ZERO);
        t.release(ms(10), &throttled(429, Some(Duration::from_secs(86_400))));
        assert_eq!(t.blocked_until(), ms(60_010), "a day is capped at max_block");
    }

    #[test]
    fn repeated_429s_stop_at_the_floor_and_successes_relax_back() {
        let mut t = Throttle::new(tuning(8.0, 4), Duration::ZERO);
        let mut now = Duration::ZERO;
        for _ in 0..20 {
            now = next_grant(&mut t, now);
            t.release(now, &throttled(429, Some(Duration::ZERO)));
        }
        assert_eq!(t.effective_rate(), Some(8.0 / FLOOR_DIVISOR), "never below the floor");
        let mut rates = vec![];
        for _ in 0..25 {
            now = next_grant(&mut t, now);
            t.release(now, &ok(1));
            rates.push(t.effective_rate().unwrap_or_default());
        }
        assert!(rates.windows(2).all(|w| w[1] >= w[0]), "relaxing only goes up: {rates:?}");
        assert!((rates[0] - (0.25 + 0.4)).abs() < 1e-9, "additive: 1/20 of the configured rate: {rates:?}");
        assert_eq!(rates.last().copied(), Some(8.0), "back at the configured rate, never above");
    }

    #[test]
    fn other_errors_neither_tighten_nor_relax() {
        let mut t = Throttle::new(tuning(8.0, 4), Duration::ZERO);
        t.try_acquire(Duration::ZERO);
        t.release(ms(1), &throttled(429, None));
        let after = t.effective_rate();
        for status in [Some(500), Some(502), None] {
            let now = t.blocked_until().max(ms(1000));
            let now = next_grant(&mut t, now);
            t.release(now, &Outcome { status, latency: ms(5), retry_after: None, failed: false });
        }
        assert_eq!(t.effective_rate(), after);
        assert_eq!(t.latency(), None, "errors do not feed the latency average");
    }

    #[test]
    fn slow_answers_cap_the_rate_at_target_concurrency_over_latency() {
        let mut t = Throttle::new(Tuning { target_concurrency: 2.0, ..tuning(10.0, 8) }, Duration::ZERO);
        let mut now = Duration::ZERO;
        for _ in 0..30 {
            now = next_grant(&mut t, now);
            t.release(now, &ok(1000));
        }
        // 2 requests in flight on average at 1 s latency: 2 per second
        assert_eq!(t.latency(), Some(Duration::from_secs(1)));
        assert_eq!(t.effective_rate(), Some(2.0));
        let g = next_grant(&mut t, now + MS);
        assert_eq!(t.try_acquire(g + MS), Decision::WaitUntil(g + ms(500)));
        // fast answers lift the cap again, up to the configured rate
        for _ in 0..30 {
            now = next_grant(&mut t, now);
            t.release(now, &ok(10));
        }
        assert_eq!(t.effective_rate(), Some(10.0));
    }

    #[test]
    fn without_adaptation_only_retry_after_acts() {
        let mut t = Throttle::new(Tuning { adaptive: false, ..tuning(10.0, 4) }, Duration::ZERO);
        t.try_acquire(Duration::ZERO);
        t.release(ms(1), &throttled(429, Some(Duration::from_secs(2))));
        assert_eq!(t.effective_rate(), Some(10.0));
        assert_eq!(t.blocked_until(), ms(2001));
    }

    #[test]
    fn the_saved_back_off_is_restored_within_the_new_tuning() {
        let mut t = Throttle::new(tuning(8.0, 4), Duration::ZERO);
        assert_eq!(t.saved(Duration::ZERO), None, "nothing to keep while untouched");
        t.try_acquire(Duration::ZERO);
        assert!(t.release(ms(10), &throttled(429, Some(Duration::from_secs(60)))), "a 429 changes the back-off");
        let saved = t.saved(ms(20)).expect("blocked and tightened");
        assert_eq!(saved.rate, Some(4.0));
        assert_eq!(saved.blocked_until, ms(60_010));

        // a successor whose epoch is 5 s later on the same timeline
        let mut next = Throttle::new(tuning(8.0, 4), Duration::ZERO);
        next.restore(&Saved { blocked_until: saved.blocked_until - Duration::from_secs(5), ..saved }, Duration::ZERO);
        assert_eq!(next.effective_rate(), Some(4.0));
        assert_eq!(next.try_acquire(ms(1)), Decision::WaitUntil(ms(55_010)), "the block holds on");
        // a rate that a new configuration lowered: never above it
        let mut lower = Throttle::new(tuning(2.0, 4), Duration::ZERO);
        lower.restore(&saved, Duration::ZERO);
        assert_eq!(lower.effective_rate(), Some(2.0));
        // a successor with a shorter max_block caps the block
        let mut capped = Throttle::new(Tuning { max_block: Duration::from_secs(10), ..tuning(8.0, 4) }, Duration::ZERO);
        capped.restore(&saved, Duration::ZERO);
        assert_eq!(capped.blocked_until(), Duration::from_secs(10));

        // relaxing a tightened rate is a change; relaxing at the configured rate is not
        let mut now = ms(60_010);
        let mut changes = 0;
        for _ in 0..20 {
            now = next_grant(&mut t, now);
            changes += usize::from(t.release(now, &ok(1)));
        }
        assert_eq!(changes, 10, "from half to full in 10 steps of 1/20");
        assert_eq!(t.saved(now), None, "back at the configured rate, no block ahead");
    }

    #[test]
    fn an_unlimited_domain_passes_without_a_permit_until_a_429_blocks_it() {
        let mut t = Throttle::new(Tuning { rps: None, concurrency: u32::MAX, ..Tuning::default() }, Duration::ZERO);
        assert!(t.unlimited());
        assert_eq!(t.try_pass(MS), Decision::Granted);
        assert_eq!(t.in_flight(), 0, "nothing held");
        assert!(t.report(ms(2), &throttled(429, Some(Duration::from_secs(1)))), "a 429 is a change");
        assert_eq!(t.try_pass(ms(3)), Decision::WaitUntil(ms(1002)));
        assert_eq!(t.try_pass(ms(1002)), Decision::Granted);
        t.set_crawl_delay(Some(Duration::from_secs(2)));
        assert!(!t.unlimited(), "a crawl-delay is a rate");
        let limited = Throttle::new(Tuning { rps: None, concurrency: 8, ..Tuning::default() }, Duration::ZERO);
        assert!(!limited.unlimited(), "a concurrency limit needs permits");
        assert!(!Throttle::new(tuning(4.0, u32::MAX), Duration::ZERO).unlimited(), "a rate needs permits");
    }

    #[test]
    fn an_unlimited_domain_still_honours_retry_after_and_crawl_delay() {
        let mut t = Throttle::new(Tuning { rps: None, concurrency: u32::MAX, ..Tuning::default() }, Duration::ZERO);
        for _ in 0..100 {
            assert_eq!(t.try_acquire(MS), Decision::Granted);
        }
        t.release(ms(2), &throttled(429, Some(Duration::from_secs(1))));
        assert_eq!(t.try_acquire(ms(3)), Decision::WaitUntil(ms(1002)));
        assert_eq!(t.effective_rate(), None);
        t.set_crawl_delay(Some(Duration::from_secs(2)));
        assert_eq!(t.effective_rate(), Some(0.5));
        assert_eq!(t.try_acquire(ms(1002)), Decision::Granted);
        assert_eq!(t.try_acquire(ms(1003)), Decision::WaitUntil(ms(3002)));
    }
}
