//! A circuit breaker per domain: after `failures` consecutive failed attempts
//! (connection errors, timeouts, 5xx answers) a domain's circuit opens and
//! requests to it fail at once, without touching the network, for
//! `cooldown`; then it is half-open and lets one probe through: a success
//! closes it, a failure opens it for another cool-down. [`Breaker`] is the
//! pure state machine (times are passed in); [`Breakers`] keeps one per
//! domain for a run and reads an injected [`Clock`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// When a circuit opens and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive failures that open a domain's circuit (0: never open).
    pub failures: u32,
    /// How long an open circuit refuses requests before it lets a probe through.
    pub cooldown: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy { failures: 10, cooldown: Duration::from_secs(30) }
    }
}

/// Where a domain's circuit stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Requests go through; `failures` in a row so far.
    Closed {
        /// Consecutive failures.
        failures: u32,
    },
    /// Requests are refused until `until`.
    Open {
        /// End of the cool-down.
        until: Instant,
        /// Consecutive failures that opened it (and since).
        failures: u32,
    },
    /// The cool-down is over: one probe request is let through (`probing`
    /// while it is in flight), the others are refused.
    HalfOpen {
        /// The probe is in flight.
        probing: bool,
        /// Consecutive failures so far.
        failures: u32,
    },
}

/// Why a request was refused without being sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The circuit is open for `retry_in` more.
    Open {
        /// Consecutive failures that opened it.
        failures: u32,
        /// Time left of the cool-down.
        retry_in: Duration,
    },
    /// The circuit is half-open and its one probe is in flight.
    Probing {
        /// Consecutive failures that opened it.
        failures: u32,
    },
}

/// What an attempt's outcome did to the circuit (to log it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// It opened (or re-opened after a failed probe) after `failures` in a row.
    Opened {
        /// Consecutive failures.
        failures: u32,
    },
    /// A successful probe closed it.
    Closed,
}

/// One domain's circuit: a pure state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Breaker {
    state: State,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker { state: State::Closed { failures: 0 } }
    }
}

impl Breaker {
    /// Where it stands.
    pub fn state(&self) -> State {
        self.state
    }

    /// May an attempt go out at `now`? An open circuit whose cool-down is
    /// over turns half-open and admits this attempt as its probe.
    pub fn admit(&mut self, now: Instant) -> Result<(), Refusal> {
        match self.state {
            State::Closed { .. } => Ok(()),
            State::Open { until, failures } if now < until => {
                Err(Refusal::Open { failures, retry_in: until.saturating_duration_since(now) })
            }
            State::Open { failures, .. } | State::HalfOpen { probing: false, failures } => {
                self.state = State::HalfOpen { probing: true, failures };
                Ok(())
            }
            State::HalfOpen { probing: true, failures } => Err(Refusal::Probing { failures }),
        }
    }

    /// An admitted attempt ended without saying anything (abandoned): a
    /// half-open circuit lets its next probe through.
    pub fn abandon(&mut self) {
        if let State::HalfOpen { probing: true, failures } = self.state {
            self.state = State::HalfOpen { probing: false, failures };
        }
    }

    /// Records an admitted attempt's outcome at `now` (`ok`: it was not a
    /// connection error, timeout or 5xx).
    pub fn record(&mut self, ok: bool, now: Instant, policy: &BreakerPolicy) -> Option<Transition> {
        let was_half_open = matches!(self.state, State::HalfOpen { .. });
        if ok {
            self.state = State::Closed { failures: 0 };
            return was_half_open.then_some(Transition::Closed);
        }
        match self.state {
            State::Closed { failures } => {
                let failures = failures.saturating_add(1);
                if policy.failures > 0 && failures >= policy.failures {
                    self.state = State::Open { until: now + policy.cooldown, failures };
                    Some(Transition::Opened { failures })
                } else {
                    self.state = State::Closed { failures };
                    None
                }
            }
            // an attempt sent before the circuit opened: it stays open as it is
            State::Open { until, failures } => {
                self.state = State::Open { until, failures: failures.saturating_add(1) };
                None
            }
            State::HalfOpen { failures, .. } => {
                let failures = failures.saturating_add(1);
                self.state = State::Open { until: now + policy.cooldown, failures };
                Some(Transition::Opened { failures })
            }
        }
    }
}

/// Where the breakers read the time (injected, so tests need no sleeping).
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> Instant;
}

/// The monotonic clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A request refused by an open circuit, with the message the plugin gets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CircuitOpen {
    /// The domain.
    pub host: String,
    /// Why.
    pub refusal: Refusal,
    /// The message: "circuit open for host X after N consecutive failures; retrying at …".
    pub message: String,
}

impl CircuitOpen {
    pub(crate) fn new(host: &str, refusal: Refusal) -> CircuitOpen {
        let message = match &refusal {
            Refusal::Open { failures, retry_in } => {
                // whole seconds, rounded up: "in 0s" would read as "now"
                let secs = retry_in.as_secs() + u64::from(retry_in.subsec_nanos() > 0);
                let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(secs));
                format!(
                    "circuit open for host {host} after {failures} consecutive failures (connection errors, timeouts or 5xx answers); retrying at {at} (in {secs}s)"
                )
            }
            Refusal::Probing { failures } => format!(
                "circuit half-open for host {host} after {failures} consecutive failures: one probe request is in flight, the others fail until it succeeds"
            ),
        };
        CircuitOpen { host: host.to_string(), refusal, message }
    }
}

/// One [`Breaker`] per domain, shared by the threads of a run.
pub struct Breakers {
    policy: BreakerPolicy,
    clock: Arc<dyn Clock>,
    domains: Mutex<HashMap<String, Breaker>>,
}

impl std::fmt::Debug for Breakers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breakers").field("policy", &self.policy).finish_non_exhaustive()
    }
}

impl Breakers {
    /// Breakers following `policy`, reading `clock`.
    pub fn new(policy: BreakerPolicy, clock: Arc<dyn Clock>) -> Breakers {
        Breakers { policy, clock, domains: Mutex::new(HashMap::new()) }
    }

    /// The policy.
    pub fn policy(&self) -> BreakerPolicy {
        self.policy
    }

    /// May an attempt to `host` go out now?
    pub fn admit(&self, host: &str) -> Result<(), CircuitOpen> {
        if self.policy.failures == 0 {
            return Ok(());
        }
        let now = self.clock.now();
        let mut domains = self.domains.lock().unwrap_or_else(|p| p.into_inner());
        domains.entry(host.to_string()).or_default().admit(now).map_err(|r| CircuitOpen::new(host, r))
    }

    /// Records an attempt's outcome; logs when the circuit opens or closes.
    pub fn record(&self, host: &str, ok: bool) -> Option<Transition> {
        if self.policy.failures == 0 {
            return None;
        }
        let now = self.clock.now();
        let t = {
            let mut domains = self.domains.lock().unwrap_or_else(|p| p.into_inner());
            domains.entry(host.to_string()).or_default().record(ok, now, &self.policy)
        };
        match t {
            Some(Transition::Opened { failures }) => tracing::warn!(
                host,
                failures,
                cooldown_secs = self.policy.cooldown.as_secs(),
                "circuit opened for host {host} after {failures} consecutive failures; its requests fail at once for {}s, then one probe is let through",
                self.policy.cooldown.as_secs()
            ),
            Some(Transition::Closed) => tracing::info!(host, "circuit closed for host {host}: the probe succeeded"),
            None => {}
        }
        t
    }

    /// An admitted attempt to `host` ended without an outcome (see [`Breaker::abandon`]).
    pub fn abandon(&self, host: &str) {
        if let Some(b) = self.domains.lock().unwrap_or_else(|p| p.into_inner()).get_mut(host) {
            b.abandon();
        }
    }

    /// The open circuits: domain, end of the cool-down, consecutive failures.
    pub fn open(&self) -> Vec<(String, Instant, u32)> {
        let domains = self.domains.lock().unwrap_or_else(|p| p.into_inner());
        domains
            .iter()
            .filter_map(|(h, b)| match b.state() {
                State::Open { until, failures } => Some((h.clone(), until, failures)),
                _ => None,
            })
            .collect()
    }

    /// Opens `host`'s circuit until `until` after `failures` (a circuit a
    /// previous process opened).
    pub fn restore_open(&self, host: &str, until: Instant, failures: u32) {
        let mut domains = self.domains.lock().unwrap_or_else(|p| p.into_inner());
        domains.insert(host.to_string(), Breaker { state: State::Open { until, failures } });
    }

    /// The current time of the breakers' clock.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// The state of `host`'s circuit (closed if never seen).
    pub fn state(&self, host: &str) -> State {
        let domains = self.domains.lock().unwrap_or_else(|p| p.into_inner());
        domains.get(host).map(Breaker::state).unwrap_or(State::Closed { failures: 0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock the test moves by hand.
    struct Manual(Mutex<Instant>);

    impl Manual {
        fn advance(&self, d: Duration) {
            let mut t = self.0.lock().expect("clock");
            *t += d;
        }
    }

    impl Clock for Manual {
        fn now(&self) -> Instant {
            *self.0.lock().expect("clock")
        }
    }

    const POLICY: BreakerPolicy = BreakerPolicy { failures: 3, cooldown: Duration::from_secs(30) };

    #[test]
    fn opens_after_n_consecutive_failures_and_a_success_resets_the_count() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        assert_eq!(b.record(false, t0, &POLICY), None);
        assert_eq!(b.record(false, t0, &POLICY), None);
        assert_eq!(b.record(true, t0, &POLICY), None, "a success in between resets");
        assert_eq!(b.state(), State::Closed { failures: 0 });
        assert_eq!(b.record(false, t0, &POLICY), None);
        assert_eq!(b.record(false, t0, &POLICY), None);
        assert_eq!(b.record(false, t0, &POLICY), Some(Transition::Opened { failures: 3 }));
        assert_eq!(
            b.admit(t0 + Duration::from_secs(10)),
            Err(Refusal::Open { failures: 3, retry_in: Duration::from_secs(20) })
        );
    }

    #[test]
    fn half_open_lets_one_probe_through_success_closes_failure_reopens() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        for _ in 0..3 {
            b.record(false, t0, &POLICY);
        }
        let after = t0 + Duration::from_secs(30);
        assert_eq!(b.admit(after), Ok(()), "the cool-down is over: a probe goes");
        assert_eq!(b.admit(after), Err(Refusal::Probing { failures: 3 }), "one probe at a time");
        // the probe fails: open for another cool-down from now
        assert_eq!(b.record(false, after, &POLICY), Some(Transition::Opened { failures: 4 }));
        assert!(b.admit(after + Duration::from_secs(29)).is_err());
        let later = after + Duration::from_secs(30);
        assert_eq!(b.admit(later), Ok(()));
        assert_eq!(b.record(true, later, &POLICY), Some(Transition::Closed));
        assert_eq!(b.admit(later), Ok(()));
        assert_eq!(b.state(), State::Closed { failures: 0 });
    }

    #[test]
    fn late_failures_of_requests_already_sent_do_not_extend_an_open_circuit() {
        let t0 = Instant::now();
        let mut b = Breaker::default();
        for _ in 0..3 {
            b.record(false, t0, &POLICY);
        }
        assert_eq!(b.record(false, t0 + Duration::from_secs(20), &POLICY), None);
        assert_eq!(b.admit(t0 + Duration::from_secs(30)), Ok(()), "still the first cool-down");
    }

    #[test]
    fn breakers_are_per_domain_use_the_injected_clock_and_say_when_they_retry() {
        let clock = Arc::new(Manual(Mutex::new(Instant::now())));
        let breakers = Breakers::new(POLICY, clock.clone());
        for _ in 0..3 {
            breakers.admit("dead.example").expect("closed");
            breakers.record("dead.example", false);
        }
        let refused = breakers.admit("dead.example").expect_err("open");
        assert!(
            refused.message.starts_with("circuit open for host dead.example after 3 consecutive failures"),
            "{}",
            refused.message
        );
        assert!(
            refused.message.contains("retrying at ") && refused.message.ends_with("(in 30s)"),
            "{}",
            refused.message
        );
        assert_eq!(breakers.admit("live.example"), Ok(()), "another domain is not affected");
        clock.advance(Duration::from_millis(29_500));
        let refused = breakers.admit("dead.example").expect_err("still open");
        assert!(refused.message.ends_with("(in 1s)"), "rounded up: {}", refused.message);
        clock.advance(Duration::from_millis(500));
        assert_eq!(breakers.admit("dead.example"), Ok(()), "the probe");
        assert!(
            breakers.admit("dead.example").expect_err("probing").message.contains("one probe request is in flight")
        );
        assert_eq!(breakers.record("dead.example", true), Some(Transition::Closed));
        assert_eq!(breakers.admit("dead.example"), Ok(()));
    }

    #[test]
    fn zero_failures_turns_the_breaker_off() {
        let breakers = Breakers::new(BreakerPolicy { failures: 0, ..POLICY }, Arc::new(SystemClock));
        for _ in 0..100 {
            breakers.record("h", false);
        }
        assert_eq!(breakers.admit("h"), Ok(()));
    }
}
