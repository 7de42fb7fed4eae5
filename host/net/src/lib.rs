//! dc-net: the host's HTTP for plugins (roadmap WP-02). Today: [`retry`],
//! which every plugin request goes through, so existing plugins gain retries
//! unchanged. Per-host politeness limits, request metrics, proxies and the
//! crawl frontier attach here.

#![deny(missing_docs)]

pub mod retry;

pub use retry::{RetryPolicy, send_with_retries};
