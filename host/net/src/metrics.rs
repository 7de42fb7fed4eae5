//! Request metrics of a run ([`RequestMetrics`], shared by all its threads
//! behind one short mutex): plugin requests, attempts and retries, answers
//! by status code, errors by class, bytes received and an HDR latency
//! histogram — in total, per domain and per proxy. [`Exchange`] is one
//! plugin request as the retry loop sees it: it records every attempt here
//! and asks the run's [`Breakers`] before each one. [`MetricsSnapshot`] is
//! the versioned JSON document stored with the run.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::breaker::{Breakers, CircuitOpen};
use crate::retry::AttemptObserver;

/// The version of [`MetricsSnapshot`]'s layout.
pub const SNAPSHOT_VERSION: u32 = 1;

/// Why an attempt or a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// No answer in time.
    Timeout,
    /// The connection could not be made, or was reset.
    Connection,
    /// The body was larger than the request's `max_body_bytes`.
    BodyTooLarge,
    /// Reading the body failed.
    Body,
    /// Refused at once: the domain's circuit was open.
    CircuitOpen,
    /// Anything else (a bad URL, too many redirects, …).
    Other,
}

impl ErrorClass {
    /// The class of a failed exchange.
    pub fn of(err: &reqwest::Error) -> ErrorClass {
        if err.is_timeout() {
            ErrorClass::Timeout
        } else if err.is_connect() || crate::retry::is_reset(err) {
            ErrorClass::Connection
        } else if err.is_body() || err.is_decode() {
            ErrorClass::Body
        } else {
            ErrorClass::Other
        }
    }

    /// Its name in snapshots and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Timeout => "timeout",
            ErrorClass::Connection => "connection",
            ErrorClass::BodyTooLarge => "body_too_large",
            ErrorClass::Body => "body",
            ErrorClass::CircuitOpen => "circuit_open",
            ErrorClass::Other => "other",
        }
    }
}

/// Latencies up to an hour, in microseconds, with 2 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid histogram bounds")
}

#[derive(Debug, Clone)]
struct Stats {
    requests: u64,
    attempts: u64,
    retries: u64,
    status: BTreeMap<u16, u64>,
    errors: BTreeMap<ErrorClass, u64>,
    bytes: u64,
    circuit_opened: u64,
    latency: Histogram<u64>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            requests: 0,
            attempts: 0,
            retries: 0,
            status: BTreeMap::new(),
            errors: BTreeMap::new(),
            bytes: 0,
            circuit_opened: 0,
            latency: histogram(),
        }
    }
}

impl Stats {
    fn snapshot(&self) -> StatsSnapshot {
        let h = &self.latency;
        let ms = |us: u64| us as f64 / 1000.0;
        let latency = (!h.is_empty()).then(|| Latency {
            count: h.len(),
            min_ms: ms(h.min()),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p95_ms: ms(h.value_at_quantile(0.95)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        });
        StatsSnapshot {
            requests: self.requests,
            attempts: self.attempts,
            retries: self.retries,
            status: self.status.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            errors: self.errors.clone(),
            bytes_received: self.bytes,
            circuit_opened: self.circuit_opened,
            latency,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    total: Stats,
    domains: BTreeMap<String, Stats>,
    proxies: BTreeMap<String, Stats>,
}

impl Inner {
    /// Applies `f` to the total, the domain's and the proxy's stats.
    fn each(&mut self, host: &str, proxy: Option<&str>, f: impl Fn(&mut Stats)) {
        f(&mut self.total);
        f(self.domains.entry(host.to_string()).or_default());
        if let Some(p) = proxy {
            f(self.proxies.entry(p.to_string()).or_default());
        }
    }
}

/// The request metrics of one run, shared by all its threads. Every record
/// takes one short lock; [`RequestMetrics::generation`] changes with each.
#[derive(Debug, Default)]
pub struct RequestMetrics {
    inner: Mutex<Inner>,
    generation: AtomicU64,
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// An answer with this status (its headers were read).
    Status(u16),
    /// No answer.
    Error(ErrorClass),
}

impl RequestMetrics {
    /// Empty metrics.
    pub fn new() -> RequestMetrics {
        RequestMetrics::default()
    }

    fn with(&self, f: impl FnOnce(&mut Inner)) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut inner);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Counts one plugin request to `host` (through `proxy`).
    pub fn request(&self, host: &str, proxy: Option<&str>) {
        self.with(|i| i.each(host, proxy, |s| s.requests += 1));
    }

    /// Records attempt number `attempt` (1-based; later ones are retries)
    /// of a request to `host`: its outcome and how long it took.
    pub fn attempt(&self, host: &str, proxy: Option<&str>, attempt: u32, outcome: AttemptOutcome, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1);
        self.with(|i| {
            i.each(host, proxy, |s| {
                s.attempts += 1;
                if attempt > 1 {
                    s.retries += 1;
                }
                match outcome {
                    AttemptOutcome::Status(code) => *s.status.entry(code).or_default() += 1,
                    AttemptOutcome::Error(class) => *s.errors.entry(class).or_default() += 1,
                }
                s.latency.saturating_record(us);
            })
        });
    }

    /// Counts a failure outside an attempt (a refused request, a body too large).
    pub fn error(&self, host: &str, proxy: Option<&str>, class: ErrorClass) {
        self.with(|i| i.each(host, proxy, |s| *s.errors.entry(class).or_default() += 1));
    }

    /// Adds the body bytes received for a request.
    pub fn received(&self, host: &str, proxy: Option<&str>, bytes: u64) {
        self.with(|i| i.each(host, proxy, |s| s.bytes += bytes));
    }

    /// Counts a circuit opening for `host`.
    pub fn circuit_opened(&self, host: &str) {
        self.with(|i| i.each(host, None, |s| s.circuit_opened += 1));
    }

    /// Changes with every record: a writer stores the snapshot again only
    /// when this moved.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Everything so far.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        MetricsSnapshot {
            version: SNAPSHOT_VERSION,
            total: inner.total.snapshot(),
            domains: inner.domains.iter().map(|(k, v)| (k.clone(), v.snapshot())).collect(),
            proxies: inner.proxies.iter().map(|(k, v)| (k.clone(), v.snapshot())).collect(),
        }
    }
}

/// Latency percentiles of the attempts, in milliseconds (to the
/// histogram's 2 significant digits).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Latency {
    /// Attempts measured.
    pub count: u64,
    /// Fastest.
    pub min_ms: f64,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

/// The counts of a run, a domain or a proxy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatsSnapshot {
    /// Plugin requests (each may take several attempts).
    pub requests: u64,
    /// Exchanges sent, retries included (a refused request sends none).
    pub attempts: u64,
    /// Attempts after the first of their request.
    pub retries: u64,
    /// Answers by status code (every attempt's, retried ones too). The keys
    /// are strings (`"200"`), as JSON has them.
    pub status: BTreeMap<String, u64>,
    /// Failures by class: attempts without an answer, requests refused by an
    /// open circuit, bodies too large or unreadable.
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, u64>))]
    pub errors: BTreeMap<ErrorClass, u64>,
    /// Response body bytes handed to the plugin.
    pub bytes_received: u64,
    /// Times a circuit opened (per domain; the total sums them).
    #[serde(default)]
    pub circuit_opened: u64,
    /// Latency of the attempts (none before the first).
    pub latency: Option<Latency>,
}

/// The request metrics of a run, as stored with it (`version` 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MetricsSnapshot {
    /// Layout version ([`SNAPSHOT_VERSION`]).
    pub version: u32,
    /// All requests of the run.
    #[serde(flatten)]
    pub total: StatsSnapshot,
    /// By domain (host name of the URL).
    pub domains: BTreeMap<String, StatsSnapshot>,
    /// By proxy URL, for requests sent through one.
    pub proxies: BTreeMap<String, StatsSnapshot>,
}

impl MetricsSnapshot {
    /// Reads a stored snapshot, refusing a layout this build does not know.
    pub fn from_json(v: serde_json::Value) -> Result<MetricsSnapshot, String> {
        let version = v.get("version").and_then(serde_json::Value::as_u64);
        if version != Some(u64::from(SNAPSHOT_VERSION)) {
            return Err(format!(
                "stored request metrics have version {}, this dc-host reads version {SNAPSHOT_VERSION}",
                version.map(|v| v.to_string()).unwrap_or_else(|| "none".into())
            ));
        }
        serde_json::from_value(v).map_err(|e| format!("stored request metrics are unreadable: {e}"))
    }
}

/// The domain a URL's requests count under: its host name (`?` when the URL
/// has none; such a request fails before it is sent).
pub fn domain_of(url: &str) -> String {
    reqwest::Url::parse(url).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_else(|| "?".into())
}

/// One plugin request: counts it, asks the domain's circuit before each
/// attempt and records every attempt's outcome in the metrics and the
/// breaker. Hand it to [`crate::send_with_retries`].
#[derive(Debug)]
pub struct Exchange<'a> {
    metrics: &'a RequestMetrics,
    breakers: &'a Breakers,
    host: String,
    proxy: Option<&'a str>,
}

impl<'a> Exchange<'a> {
    /// Starts (and counts) a request to `url`, through `proxy` if any.
    pub fn start(metrics: &'a RequestMetrics, breakers: &'a Breakers, url: &str, proxy: Option<&'a str>) -> Self {
        let host = domain_of(url);
        metrics.request(&host, proxy);
        Exchange { metrics, breakers, host, proxy }
    }

    /// The request's body was read: `bytes` of it.
    pub fn received(&self, bytes: u64) {
        self.metrics.received(&self.host, self.proxy, bytes);
    }

    /// The request failed after its answer (a body too large or unreadable).
    pub fn failed(&self, class: ErrorClass) {
        self.metrics.error(&self.host, self.proxy, class);
    }
}

impl AttemptObserver for Exchange<'_> {
    fn before(&self, _attempt: u32) -> Result<(), String> {
        self.breakers.admit(&self.host).map_err(|CircuitOpen { message, .. }| {
            self.metrics.error(&self.host, self.proxy, ErrorClass::CircuitOpen);
            message
        })
    }

    fn after(&self, attempt: u32, outcome: Result<&reqwest::Response, &reqwest::Error>, elapsed: Duration) {
        let (recorded, ok) = match outcome {
            Ok(r) => (AttemptOutcome::Status(r.status().as_u16()), !r.status().is_server_error()),
            Err(e) => {
                let class = ErrorClass::of(e);
                (AttemptOutcome::Error(class), !matches!(class, ErrorClass::Timeout | ErrorClass::Connection))
            }
        };
        self.metrics.attempt(&self.host, self.proxy, attempt, recorded, elapsed);
        if let Some(crate::breaker::Transition::Opened { .. }) = self.breakers.record(&self.host, ok) {
            self.metrics.circuit_opened(&self.host);
        }
    }

    fn refused(&self, _attempt: u32) {
        // the run's own circuit let it through (maybe as its probe): no outcome
        self.breakers.abandon(&self.host);
        self.metrics.error(&self.host, self.proxy, ErrorClass::CircuitOpen);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn counts_add_up_in_total_per_domain_and_per_proxy() {
        let m = RequestMetrics::new();
        let g0 = m.generation();
        m.request("a.example", None);
        m.attempt("a.example", None, 1, AttemptOutcome::Status(503), ms(5));
        m.attempt("a.example", None, 2, AttemptOutcome::Status(200), ms(7));
        m.received("a.example", None, 100);
        m.request("b.example", Some("http://proxy:3128"));
        m.attempt("b.example", Some("http://proxy:3128"), 1, AttemptOutcome::Error(ErrorClass::Timeout), ms(30));
        m.error("b.example", Some("http://proxy:3128"), ErrorClass::CircuitOpen);
        assert!(m.generation() > g0);
        let s = m.snapshot();
        assert_eq!((s.total.requests, s.total.attempts, s.total.retries, s.total.bytes_received), (2, 3, 1, 100));
        let codes = |pairs: &[(&str, u64)]| pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>();
        assert_eq!(s.total.status, codes(&[("200", 1), ("503", 1)]));
        assert_eq!(s.total.errors, BTreeMap::from([(ErrorClass::Timeout, 1), (ErrorClass::CircuitOpen, 1)]));
        assert_eq!(s.domains["a.example"].status, codes(&[("200", 1), ("503", 1)]));
        assert_eq!(s.domains["b.example"].requests, 1);
        assert_eq!(s.proxies.keys().collect::<Vec<_>>(), ["http://proxy:3128"]);
        assert_eq!(s.proxies["http://proxy:3128"].attempts, 1);
        assert!(!s.proxies.contains_key("a.example"));
    }

    #[test]
    fn the_histogram_gives_percentiles_in_milliseconds() {
        let m = RequestMetrics::new();
        for i in 1..=100 {
            m.attempt("h", None, 1, AttemptOutcome::Status(200), ms(i));
        }
        let l = m.snapshot().total.latency.expect("latency");
        assert_eq!(l.count, 100);
        // 2 significant digits: within 1 % of the true value
        let near = |got: f64, want: f64| (got - want).abs() <= want * 0.01;
        assert!(near(l.p50_ms, 50.0), "{l:?}");
        assert!(near(l.p95_ms, 95.0), "{l:?}");
        assert!(near(l.p99_ms, 99.0), "{l:?}");
        assert!(near(l.max_ms, 100.0) && near(l.min_ms, 1.0), "{l:?}");
        assert!(near(l.mean_ms, 50.5), "{l:?}");
        assert_eq!(RequestMetrics::new().snapshot().total.latency, None, "no attempts, no latency");
    }

    #[test]
    fn the_snapshot_is_versioned_json_that_reads_back() {
        let m = RequestMetrics::new();
        m.request("h", None);
        m.attempt("h", None, 1, AttemptOutcome::Status(404), ms(3));
        m.attempt("h", Some("http://p:1"), 2, AttemptOutcome::Error(ErrorClass::Connection), ms(3));
        let s = m.snapshot();
        let v = serde_json::to_value(&s).expect("serializes");
        assert_eq!(v["version"], 1);
        assert_eq!(v["status"]["404"], 1, "status codes are keys: {v}");
        assert_eq!(v["errors"]["connection"], 1, "{v}");
        assert_eq!(v["domains"]["h"]["requests"], 1);
        assert_eq!(MetricsSnapshot::from_json(v.clone()).expect("reads back"), s);
        let mut future = v;
        future["version"] = 2.into();
        let e = MetricsSnapshot::from_json(future).expect_err("unknown version");
        assert!(e.contains("version 2, this dc-host reads version 1"), "{e}");
    }

    #[test]
    fn threads_share_one_metrics_object() {
        let m = RequestMetrics::new();
        std::thread::scope(|s| {
            for t in 0..8 {
                let m = &m;
                s.spawn(move || {
                    for _ in 0..1000 {
                        m.request(if t % 2 == 0 { "even" } else { "odd" }, None);
                    }
                });
            }
        });
        let s = m.snapshot();
        assert_eq!(s.total.requests, 8000);
        assert_eq!((s.domains["even"].requests, s.domains["odd"].requests), (4000, 4000));
    }
}
