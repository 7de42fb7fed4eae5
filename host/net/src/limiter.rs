//! The politeness limiter: one [`Throttle`] per domain (host name, any port)
//! and one robots.txt cache per origin, with the waiting done here. The
//! permit server (`permit_server`) holds the one instance of a machine and
//! serves it to every worker; a worker that cannot reach it falls back to an
//! instance of its own ([`crate::HostLimiter`]).
//!
//! A permit is granted when the domain's throttle says so; the request then
//! runs and its permit is released with the outcome (status, latency,
//! `Retry-After`), which tightens or relaxes the domain. A permit dropped
//! without a release (a cancelled request) is released as "no answer".

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Url;
use tokio::sync::{Notify, OnceCell};

use crate::robots::{self, Rules};
use crate::throttle::{Decision, Outcome, Throttle, Tuning};

/// The limits of every domain.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitConfig {
    /// Domains without an entry of their own.
    pub default: Tuning,
    /// Loopback hosts (localhost, 127.0.0.0/8, ::1) without an entry of their
    /// own: no rate and no concurrency limit (the operator's own servers).
    pub loopback: Tuning,
    /// Per domain (lowercase host name, no port).
    pub domains: HashMap<String, Tuning>,
    /// How long a fetched robots.txt is kept.
    pub robots_ttl: Duration,
    /// Timeout of a robots.txt fetch.
    pub robots_timeout: Duration,
}

impl Default for LimitConfig {
    fn default() -> Self {
        LimitConfig {
            default: Tuning::default(),
            loopback: Tuning { rps: None, concurrency: u32::MAX, ..Tuning::default() },
            domains: HashMap::new(),
            robots_ttl: Duration::from_secs(3600),
            robots_timeout: Duration::from_secs(10),
        }
    }
}

impl LimitConfig {
    /// The tuning of `domain`.
    pub fn tuning(&self, domain: &str) -> &Tuning {
        if let Some(t) = self.domains.get(domain) {
            return t;
        }
        let bare = domain.trim_start_matches('[').trim_end_matches(']');
        let loopback = bare == "localhost"
            || bare.ends_with(".localhost")
            || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if loopback { &self.loopback } else { &self.default }
    }
}

/// The domain a URL counts against: its host, lowercase, without the port.
pub fn domain_of(url: &Url) -> Option<String> {
    url.host_str().map(str::to_ascii_lowercase)
}

struct Domain {
    throttle: Mutex<Throttle>,
    released: Notify,
}

struct RobotsEntry {
    rules: OnceCell<(Rules, Instant)>,
}

/// One machine's (or one fallback worker's) politeness state.
pub struct Politeness {
    config: LimitConfig,
    epoch: Instant,
    domains: Mutex<HashMap<String, Arc<Domain>>>,
    robots: Mutex<HashMap<String, Arc<RobotsEntry>>>,
    http: Option<reqwest::Client>,
}

impl std::fmt::Debug for Politeness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Politeness").field("config", &self.config).finish_non_exhaustive()
    }
}

/// A granted request: release it with [`Politeness::release`] (dropping it
/// releases it as "no answer").
pub struct LocalPermit {
    domain: Option<Arc<Domain>>,
    epoch: Instant,
}

impl std::fmt::Debug for LocalPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalPermit").field("limited", &self.domain.is_some()).finish()
    }
}

impl LocalPermit {
    fn finish(&mut self, outcome: &Outcome) {
        if let Some(d) = self.domain.take() {
            d.throttle.lock().unwrap_or_else(|p| p.into_inner()).release(self.epoch.elapsed(), outcome);
            d.released.notify_waiters();
        }
    }
}

impl Drop for LocalPermit {
    fn drop(&mut self) {
        self.finish(&Outcome::default());
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Politeness {
    /// A limiter with `config`; robots.txt is fetched with its own client.
    pub fn new(config: LimitConfig) -> Politeness {
        let http = reqwest::Client::builder()
            .timeout(config.robots_timeout)
            .user_agent(concat!("dc-host/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| tracing::warn!(error = %e, "cannot build the robots.txt client; robots.txt is not fetched"))
            .ok();
        Politeness { config, epoch: Instant::now(), domains: Mutex::default(), robots: Mutex::default(), http }
    }

    /// The configuration.
    pub fn config(&self) -> &LimitConfig {
        &self.config
    }

    fn domain(&self, name: &str) -> Arc<Domain> {
        lock(&self.domains)
            .entry(name.to_string())
            .or_insert_with(|| {
                Arc::new(Domain {
                    throttle: Mutex::new(Throttle::new(self.config.tuning(name).clone(), self.epoch.elapsed())),
                    released: Notify::new(),
                })
            })
            .clone()
    }

    /// Waits until a request to `url` may go, checking robots.txt first when
    /// `obey_robots`. Err: why robots.txt refuses it.
    pub async fn acquire(&self, url: &Url, obey_robots: bool) -> Result<LocalPermit, String> {
        let Some(name) = domain_of(url) else {
            return Ok(LocalPermit { domain: None, epoch: self.epoch });
        };
        let domain = self.domain(&name);
        if obey_robots && let Some(robots_url) = robots::robots_url(url) {
            let entry = self.robots_entry(&robots_url);
            let (rules, _) = entry.rules.get_or_init(|| self.fetch_robots(&robots_url, &domain)).await;
            if let Some(why) = rules.refusal(url.as_str(), &robots_url) {
                return Err(why);
            }
        }
        Ok(self.wait_for(domain).await)
    }

    async fn wait_for(&self, domain: Arc<Domain>) -> LocalPermit {
        loop {
            // registered before looking, so a release in between is not missed
            let released = domain.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let decision = lock(&domain.throttle).try_acquire(self.epoch.elapsed());
            match decision {
                Decision::Granted => return LocalPermit { domain: Some(domain.clone()), epoch: self.epoch },
                Decision::WaitUntil(at) => {
                    tokio::time::sleep_until((self.epoch + at).into()).await;
                }
                Decision::Full => released.await,
            }
        }
    }

    /// Gives a permit back with how its request ended.
    pub fn release(&self, mut permit: LocalPermit, outcome: &Outcome) {
        permit.finish(outcome);
    }

    /// The entry of an origin's robots.txt, fresh (an expired one is replaced).
    fn robots_entry(&self, robots_url: &str) -> Arc<RobotsEntry> {
        let mut map = lock(&self.robots);
        let now = Instant::now();
        let expired = map.get(robots_url).and_then(|e| e.rules.get()).is_some_and(|(_, until)| *until <= now);
        if expired {
            map.remove(robots_url);
        }
        map.entry(robots_url.to_string()).or_insert_with(|| Arc::new(RobotsEntry { rules: OnceCell::new() })).clone()
    }

    /// Fetches an origin's robots.txt, itself a request under the domain's
    /// limits, and applies its `Crawl-delay` to the domain.
    async fn fetch_robots(&self, robots_url: &str, domain: &Arc<Domain>) -> (Rules, Instant) {
        let ttl = self.config.robots_ttl;
        let Some(http) = &self.http else {
            return (Rules::AllowAll, Instant::now() + ttl);
        };
        let permit = self.wait_for(domain.clone()).await;
        let started = Instant::now();
        let (status, body, retry_after) = match http.get(robots_url).send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let retry_after = crate::retry::retry_after_of(resp.headers(), std::time::SystemTime::now());
                let latency = started.elapsed();
                let body = read_capped(resp, robots::MAX_BYTES).await;
                (Some(status), body, (retry_after, latency))
            }
            Err(e) => {
                tracing::warn!(url = robots_url, error = %e, "cannot fetch robots.txt; allowing every path for now");
                (None, Vec::new(), (None, started.elapsed()))
            }
        };
        self.release(permit, &Outcome { status, latency: retry_after.1, retry_after: retry_after.0 });
        let (rules, keep) = Rules::from_answer(status, &body, robots_url, ttl);
        lock(&domain.throttle).set_crawl_delay(rules.crawl_delay());
        (rules, Instant::now() + keep)
    }
}

async fn read_capped(mut resp: reqwest::Response, max: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= max {
            break;
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_unlimited_unless_named() {
        let mut c = LimitConfig::default();
        for h in ["localhost", "127.0.0.1", "127.5.5.5", "[::1]", "app.localhost"] {
            assert_eq!(c.tuning(h).rps, None, "{h}");
        }
        assert_eq!(c.tuning("example.com").rps, Some(4.0));
        c.domains.insert("127.0.0.1".into(), Tuning { rps: Some(1.0), ..Tuning::default() });
        assert_eq!(c.tuning("127.0.0.1").rps, Some(1.0));
        let u = Url::parse("http://User@Example.COM:8080/x").expect("url");
        assert_eq!(domain_of(&u).as_deref(), Some("example.com"));
    }
}
