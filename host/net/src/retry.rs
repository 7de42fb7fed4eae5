//! Retries of plugin HTTP requests: a response with a retryable status (429,
//! 502, 503, 504 by default) or a timeout / connection failure is tried again
//! after an exponential backoff with full jitter, or after the server's
//! `Retry-After` (seconds or an HTTP-date) when it sends one. A `Retry-After`
//! longer than the policy's maximum is not waited for: the response goes back
//! to the plugin as it is (the server asked for more patience than the run
//! has). Only idempotent methods are retried (GET, HEAD, OPTIONS, PUT, DELETE,
//! TRACE): repeating a POST could do its effect twice.
//!
//! With a politeness limiter ([`send_limited`]), every attempt — retries
//! included — waits for a permit and gives it back with its outcome, so the
//! limiter sees each 429 and its `Retry-After` as it happens.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, Response, StatusCode};

use crate::permit_client::HostLimiter;
use crate::throttle::Outcome;

/// When and how often to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts after the first (0: never retry).
    pub retries: u32,
    /// First backoff (doubled per attempt, before jitter).
    pub base: Duration,
    /// Longest wait: backoff is capped here, and a longer `Retry-After` is
    /// not waited for.
    pub max_delay: Duration,
    /// Statuses that are retried.
    pub statuses: Vec<u16>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 2,
            base: Duration::from_millis(250),
            max_delay: Duration::from_secs(60),
            statuses: vec![429, 502, 503, 504],
        }
    }
}

/// The wait a `Retry-After` value asks for at `now` (seconds or an
/// HTTP-date; a date in the past means now). None when it is unreadable.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

impl RetryPolicy {
    /// The backoff before retry number `attempt` (1-based) without a
    /// `Retry-After`: `base · 2^(attempt-1)` capped at `max_delay`, scaled by
    /// `jitter` in [0, 1] (full jitter).
    pub fn backoff(&self, attempt: u32, jitter: f64) -> Duration {
        let exp = self.base.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
        exp.min(self.max_delay).mul_f64(jitter.clamp(0.0, 1.0))
    }

    /// What to do after attempt number `attempt` (1-based) answered `status`
    /// with `headers`: None to give up (not retryable, retries used up, or a
    /// `Retry-After` over the maximum), or the wait before the next attempt.
    pub fn after_status(
        &self,
        attempt: u32,
        status: StatusCode,
        headers: &HeaderMap,
        now: SystemTime,
        jitter: f64,
    ) -> Option<Duration> {
        if attempt > self.retries || !self.statuses.contains(&status.as_u16()) {
            return None;
        }
        match retry_after_of(headers, now) {
            Some(wait) if wait > self.max_delay => None,
            Some(wait) => Some(wait),
            None => Some(self.backoff(attempt, jitter)),
        }
    }

    /// After attempt number `attempt` failed with `err`: the wait before the
    /// next attempt, for timeouts and connection failures; None otherwise.
    pub fn after_error(&self, attempt: u32, err: &reqwest::Error, jitter: f64) -> Option<Duration> {
        (attempt <= self.retries && (err.is_timeout() || err.is_connect() || is_reset(err)))
            .then(|| self.backoff(attempt, jitter))
    }
}

pub(crate) fn is_reset(err: &reqwest::Error) -> bool {
    let mut cur: Option<&dyn std::error::Error> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(io.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted)
        {
            return true;
        }
        cur = e.source();
    }
    false
}

fn idempotent(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE)
}

/// Why a request produced no response.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The HTTP exchange failed.
    #[error(transparent)]
    Http(#[from] reqwest::Error),
    /// The request was refused before it was sent by its observer (an open
    /// circuit); the message says why and what to do.
    #[error("{0}")]
    Refused(String),
    /// The politeness limiter refused the request before it was sent:
    /// robots.txt disallows it; the message says why and what to do.
    #[error("{0}")]
    RobotsDenied(String),
}

/// The name the request-metrics code uses for [`FetchError`].
pub type SendError = FetchError;

/// The wait a response's `Retry-After` header asks for at `now`, if any.
pub fn retry_after_of(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| retry_after(v, now))
}

/// Watches every attempt of one request: request metrics and the circuit
/// breaker (`crate::metrics::Exchange`) plug in here.
pub trait AttemptObserver: Sync {
    /// Before attempt number `attempt` (1-based): an error refuses it, and
    /// the request ends with that error without being sent.
    fn before(&self, attempt: u32) -> Result<(), String>;
    /// After attempt number `attempt`: its answer (headers read) or error,
    /// and how long it took.
    fn after(&self, attempt: u32, outcome: Result<&Response, &reqwest::Error>, elapsed: std::time::Duration);
    /// Attempt number `attempt`, which `before` let through, was refused
    /// without being sent by the host-wide circuit of its domain (the permit
    /// server's): it has no outcome.
    fn refused(&self, _attempt: u32) {}
}

/// Observes nothing.
impl AttemptObserver for () {
    fn before(&self, _: u32) -> Result<(), String> {
        Ok(())
    }
    fn after(&self, _: u32, _: Result<&Response, &reqwest::Error>, _: std::time::Duration) {}
}

/// Sends `req`, retrying as `policy` says and telling `observer` about
/// every attempt; returns the last response (or error) and the number of
/// attempts made (a refused attempt counts).
pub async fn send_with_retries(
    req: RequestBuilder,
    method: &Method,
    policy: &RetryPolicy,
    observer: &dyn AttemptObserver,
) -> (Result<Response, SendError>, u32) {
    send_limited(req, method, policy, None, observer).await
}

/// One attempt: the observer's consent, a permit from `limiter` (if any),
/// the exchange, the permit's release with the outcome (status, time to
/// headers, `Retry-After`), and the observer's record of it.
async fn attempt(
    req: RequestBuilder,
    limiter: Option<&HostLimiter>,
    observer: &dyn AttemptObserver,
    attempt_no: u32,
) -> Result<Response, FetchError> {
    observer.before(attempt_no).map_err(FetchError::Refused)?;
    let Some(limiter) = limiter else {
        let started = std::time::Instant::now();
        let sent = req.send().await;
        observer.after(attempt_no, sent.as_ref(), started.elapsed());
        return Ok(sent?);
    };
    let (client, built) = req.build_split();
    let request = built?;
    let permit = limiter.acquire(request.url()).await.map_err(|r| match r {
        crate::limiter::Refusal::Robots(why) => FetchError::RobotsDenied(why),
        crate::limiter::Refusal::CircuitOpen(why) => {
            observer.refused(attempt_no);
            FetchError::Refused(why)
        }
    })?;
    let started = std::time::Instant::now();
    let sent = client.execute(request).await;
    let elapsed = started.elapsed();
    let outcome = match &sent {
        Ok(resp) => Outcome {
            status: Some(resp.status().as_u16()),
            latency: elapsed,
            retry_after: retry_after_of(resp.headers(), SystemTime::now()),
            failed: false,
        },
        Err(e) => Outcome {
            status: None,
            latency: elapsed,
            retry_after: None,
            failed: matches!(crate::ErrorClass::of(e), crate::ErrorClass::Timeout | crate::ErrorClass::Connection),
        },
    };
    limiter.release(permit, &outcome).await;
    observer.after(attempt_no, sent.as_ref(), elapsed);
    Ok(sent?)
}

/// Sends `req` as [`send_with_retries`] does, every attempt (retries
/// included) waiting for a permit from `limiter` first and releasing it with
/// the outcome; a request robots.txt disallows, or whose circuit is open, is
/// not sent.
pub async fn send_limited(
    req: RequestBuilder,
    method: &Method,
    policy: &RetryPolicy,
    limiter: Option<&HostLimiter>,
    observer: &dyn AttemptObserver,
) -> (Result<Response, FetchError>, u32) {
    let retryable = idempotent(method);
    let mut attempt_no = 1u32;
    loop {
        // a body that cannot be cloned (a stream) is sent once
        let next = if retryable { req.try_clone() } else { None };
        let this = match next {
            Some(r) => r,
            None => return (attempt(req, limiter, observer, attempt_no).await, attempt_no),
        };
        let wait = match attempt(this, limiter, observer, attempt_no).await {
            Ok(resp) => {
                match policy.after_status(attempt_no, resp.status(), resp.headers(), SystemTime::now(), fastrand::f64())
                {
                    Some(w) => {
                        tracing::info!(status = resp.status().as_u16(), attempt = attempt_no, wait_ms = w.as_millis() as u64, url = %resp.url(), "retrying");
                        w
                    }
                    None => return (Ok(resp), attempt_no),
                }
            }
            Err(FetchError::Http(e)) => match policy.after_error(attempt_no, &e, fastrand::f64()) {
                Some(w) => {
                    tracing::info!(error = %e, attempt = attempt_no, wait_ms = w.as_millis() as u64, "retrying");
                    w
                }
                None => return (Err(FetchError::Http(e)), attempt_no),
            },
            Err(refused) => return (Err(refused), attempt_no),
        };
        tokio::time::sleep(wait).await;
        attempt_no += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn with_retry_after(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_str(v).expect("header"));
        h
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2026 07:28:00 GMT").expect("date");
        assert_eq!(retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(retry_after("Wed, 21 Oct 2026 07:28:30 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(retry_after("Wed, 21 Oct 2026 07:00:00 GMT", now), Some(Duration::ZERO), "a past date: now");
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn statuses_retry_after_and_the_maximum_decide() {
        let p = RetryPolicy::default();
        let now = SystemTime::now();
        let none = HeaderMap::new();
        assert_eq!(p.after_status(1, StatusCode::NOT_FOUND, &none, now, 1.0), None, "404 is final");
        assert_eq!(
            p.after_status(1, StatusCode::SERVICE_UNAVAILABLE, &with_retry_after("7"), now, 1.0),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            p.after_status(1, StatusCode::TOO_MANY_REQUESTS, &with_retry_after("3600"), now, 1.0),
            None,
            "over the maximum: give up"
        );
        assert_eq!(p.after_status(3, StatusCode::BAD_GATEWAY, &none, now, 1.0), None, "retries used up");
        assert_eq!(p.after_status(2, StatusCode::GATEWAY_TIMEOUT, &none, now, 1.0), Some(Duration::from_millis(500)));
    }

    #[test]
    fn backoff_doubles_is_capped_and_jittered() {
        let p = RetryPolicy { max_delay: Duration::from_secs(1), ..RetryPolicy::default() };
        assert_eq!(p.backoff(1, 1.0), Duration::from_millis(250));
        assert_eq!(p.backoff(3, 1.0), Duration::from_secs(1), "capped");
        assert_eq!(p.backoff(3, 0.5), Duration::from_millis(500));
        assert_eq!(p.backoff(40, 1.0), Duration::from_secs(1), "no overflow");
        assert_eq!(p.backoff(1, 0.0), Duration::ZERO);
    }

    #[test]
    fn only_idempotent_methods_are_retried() {
        assert!(idempotent(&Method::GET) && idempotent(&Method::PUT));
        assert!(!idempotent(&Method::POST) && !idempotent(&Method::PATCH));
    }
}
