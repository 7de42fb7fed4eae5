//! dc-net: the host's HTTP for plugins (roadmap WP-02): [`retry`], which
//! every plugin request goes through, so existing plugins gain retries
//! unchanged; [`metrics`], the request metrics of a run (status codes,
//! bytes, retries, errors, latency; per domain and per proxy); and
//! [`breaker`], the per-domain circuit breaker. Per-host politeness limits,
//! proxies and the crawl frontier attach here.

#![deny(missing_docs)]

pub mod breaker;
pub mod metrics;
pub mod retry;

pub use breaker::{BreakerPolicy, Breakers, SystemClock};
pub use metrics::{ErrorClass, Exchange, MetricsSnapshot, RequestMetrics};
pub use retry::{AttemptObserver, RetryPolicy, SendError, send_with_retries};
