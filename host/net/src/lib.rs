//! dc-net: the host's HTTP for plugins (roadmap WP-02). [`retry`] (which
//! every plugin request goes through, so existing plugins gain retries
//! unchanged) and the politeness limiter: [`throttle`] (the pure per-domain
//! algorithm), [`robots`] (robots.txt rules), [`limiter`] (per-domain state
//! and waiting, robots.txt cache), [`permit_server`] (one limiter per machine,
//! served to every worker over a Unix socket) and [`permit_client`] (a run's
//! side, with an in-process fallback). Request metrics, proxies and the crawl
//! frontier attach here.

#![deny(missing_docs)]

pub mod limiter;
pub mod permit_client;
pub mod permit_server;
pub mod retry;
pub mod robots;
pub mod throttle;

pub use limiter::{LimitConfig, Politeness};
pub use permit_client::{HostLimiter, Permit, PermitClient};
pub use permit_server::{default_socket, serve, serve_shared};
pub use retry::{FetchError, RetryPolicy, send_limited, send_with_retries};
pub use throttle::{Outcome, Throttle, Tuning};
