//! dc-proxy: proxies for the requests plugins send through the host.
//!
//! - `endpoint`: one proxy endpoint (URL, credentials, a stable key) and its
//!   `reqwest::Proxy`.
//! - `provider`: the [`ProxyProvider`] trait and the static provider (a list
//!   from the configuration or a file); `brightdata`: BrightData's
//!   super-proxy, whose user name carries zone, country and a session id
//!   that picks the exit.
//! - `judge`: learns a proxy's exit IP from judges (URLs that echo the
//!   caller's address), failing over to the next judge.
//! - `health`: ban detection (403/429, CAPTCHA and challenge pages) and the
//!   health score that retires a proxy.
//! - `manager`: [`ProxyManager`], one per run: verifies and reserves the
//!   run's exits (`dc_core::proxy_store`), hands a proxy to each request by
//!   rotation per request or per collecting thread, counts per-proxy stats
//!   and retires bad proxies.
//!
//! Invariants: a run sends a request through a proxy only after reserving
//! its exit, so two runs never share an exit; once every proxy of a run is
//! retired its requests fail rather than go out directly (which would show
//! the host's own address); the manager writes to the database only before
//! the run collects, never while the run's write transaction is open.

pub mod brightdata;
pub mod endpoint;
pub mod health;
pub mod judge;
pub mod manager;
pub mod provider;

pub use endpoint::Endpoint;
pub use manager::{Lease, ManagerOptions, ProxyManager, ProxyStats};
pub use provider::{ProxyProvider, StaticProvider, provider_from_settings};

/// A proxy problem; the message names the proxy (never its password) and
/// what to do.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The configuration or a proxy file is unusable.
    #[error("{0}")]
    Config(String),
    /// No proxy can be used (all reserved, unverified or retired).
    #[error("{0}")]
    Unavailable(String),
    /// Every judge failed for a proxy.
    #[error("{0}")]
    Judge(String),
    /// The reservation table could not be written.
    #[error("proxy reservation failed: {0}")]
    Db(#[from] dc_core::DbError),
}
