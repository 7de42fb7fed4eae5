//! dc-net: the host's HTTP for plugins (roadmap WP-02): [`retry`] (which
//! every plugin request goes through, so existing plugins gain retries
//! unchanged); the politeness limiter: [`throttle`] (the pure per-domain
//! algorithm), [`robots`] (robots.txt rules), [`limiter`] (per-domain state
//! and waiting, robots.txt cache), [`permit_server`] (one limiter per machine,
//! served to every worker over a Unix socket) and [`permit_client`] (a run's
//! side, with an in-process fallback); [`metrics`], the request metrics of a
//! run (status codes, bytes, retries, errors, latency; per domain and per
//! proxy); [`breaker`], the per-domain circuit breaker; and [`tls`], the
//! TLS configuration every HTTP client of the process starts from.

#![deny(missing_docs)]

pub mod breaker;
pub mod limiter;
pub mod metrics;
pub mod permit_client;
pub mod permit_server;
pub mod retry;
pub mod robots;
pub mod throttle;
pub mod tls;

pub use breaker::{BreakerPolicy, Breakers, SystemClock};
pub use limiter::{LimitConfig, Politeness, Refusal, SystemWall, WallClock};
pub use metrics::{ErrorClass, Exchange, MetricsSnapshot, RequestMetrics};
pub use permit_client::{HostLimiter, Permit, PermitClient};
pub use permit_server::{default_socket, serve, serve_shared, serve_shared_with_clock, state_path};
pub use retry::{AttemptObserver, FetchError, RetryPolicy, SendError, send_limited, send_with_retries};
pub use throttle::{Outcome, Throttle, Tuning};

/// An error with its sources, `outer: inner: innermost` (reqwest's own
/// message is only the outermost: "error sending request for url (…)").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
