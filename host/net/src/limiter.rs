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
//!
//! A domain with no rate and no concurrency limit (loopback hosts by default,
//! no crawl-delay) whose circuit is closed with no failure counted grants a
//! *pass* ([`LocalPermit::is_pass`]): nothing is held, so nothing needs to
//! be given back, and only an outcome the host must know (a 429/503 or
//! `Retry-After`, a 5xx, a connection failure or timeout: [`notable`]) needs
//! to be told. Once a failure is counted the domain grants held permits
//! again until a success resets the count, so consecutive failures are still
//! counted as the breaker defines them.
//!
//! The permit server's limiter is persistent ([`Politeness::persistent`]):
//! whenever a domain's back-off changes (a 429/503 tightens it, an answer
//! relaxes a tightened rate) the domains still backing off are saved to a
//! state file (written aside and renamed, so a crash never leaves half a
//! file), with their blocks as wall-clock times. The process that takes over
//! the socket loads it, so a takeover keeps every `Retry-After` block and
//! tightened rate; expired entries are dropped. The file also holds every
//! fetched robots.txt (status, body and the end of its TTL, saved when it is
//! fetched): a successor obeys it, and its `Crawl-delay`, without asking the
//! origin again until it expires.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use reqwest::Url;
use tokio::sync::{Notify, OnceCell};

use crate::breaker::{BreakerPolicy, Breakers, CircuitOpen, State, SystemClock, Transition};
use crate::robots::{self, Rules};
use crate::throttle::{Decision, Outcome, Saved, Throttle, Tuning};

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
    /// The per-domain circuit breaker shared by every run (failures: 0 turns it off).
    pub breaker: BreakerPolicy,
    /// The permit server leases passes (`permit_server`'s Leases).
    pub leases: bool,
}

impl Default for LimitConfig {
    fn default() -> Self {
        LimitConfig {
            default: Tuning::default(),
            loopback: Tuning { rps: None, concurrency: u32::MAX, ..Tuning::default() },
            domains: HashMap::new(),
            robots_ttl: Duration::from_secs(3600),
            robots_timeout: Duration::from_secs(10),
            breaker: BreakerPolicy::default(),
            leases: true,
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
    name: String,
    throttle: Mutex<Throttle>,
    released: Notify,
}

impl Domain {
    fn new(name: &str, throttle: Throttle) -> Arc<Domain> {
        Arc::new(Domain { name: name.to_string(), throttle: Mutex::new(throttle), released: Notify::new() })
    }
}

/// Why the limiter refuses a request (it is not sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// robots.txt disallows it; the message says why.
    Robots(String),
    /// The domain's circuit is open (host-wide); the message says since when
    /// and until when.
    CircuitOpen(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Robots(m) | Refusal::CircuitOpen(m) => f.write_str(m),
        }
    }
}

type DomainMap = Arc<Mutex<HashMap<String, Arc<Domain>>>>;

/// Where a persistent limiter reads the wall-clock time (the state file
/// holds wall-clock times, since a successor's monotonic clock starts
/// elsewhere). Injected, so a test can move it.
pub trait WallClock: Send + Sync {
    /// Now.
    fn now(&self) -> SystemTime;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemWall;

impl WallClock for SystemWall {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The state file: the domains still backing off, the open circuits and
/// the fresh robots.txt answers.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StateFile {
    /// Per domain.
    domains: HashMap<String, SavedDomain>,
    /// Open circuits, per domain.
    #[serde(default)]
    circuits: HashMap<String, SavedCircuit>,
    /// robots.txt answers, per robots.txt URL (origin).
    #[serde(default)]
    robots: HashMap<String, SavedRobots>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedRobots {
    /// The answer's status; None: no answer.
    status: Option<u16>,
    /// The body read (at most `robots::MAX_BYTES`).
    body: String,
    /// Kept until, milliseconds since the Unix epoch.
    until_unix_ms: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedCircuit {
    /// The cool-down ends, milliseconds since the Unix epoch.
    open_until_unix_ms: u64,
    /// Consecutive failures that opened it.
    failures: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedDomain {
    /// The adaptive rate, requests per second.
    rate: Option<f64>,
    /// The latency moving average, µs.
    latency_us: Option<u64>,
    /// No request before this, milliseconds since the Unix epoch.
    blocked_until_unix_ms: u64,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Saves the back-off of a persistent limiter's domains.
struct Persist {
    path: PathBuf,
    wall: Arc<dyn WallClock>,
    epoch: Instant,
    domains: DomainMap,
    breakers: Arc<Breakers>,
    robots: RobotsMap,
    /// One writer at a time (and the file names its temporary aside).
    writing: Mutex<()>,
}

impl Persist {
    /// Writes the state file: every domain with a back-off worth keeping.
    fn save(&self) {
        let _one = lock(&self.writing);
        let now = self.epoch.elapsed();
        let wall = self.wall.now();
        let domains: Vec<(String, Arc<Domain>)> =
            lock(&self.domains).iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut file = StateFile::default();
        for (name, d) in domains {
            if let Some(s) = lock(&d.throttle).saved(now) {
                let until = wall + s.blocked_until.saturating_sub(now);
                file.domains.insert(
                    name,
                    SavedDomain {
                        rate: s.rate,
                        latency_us: s.latency.map(|l| u64::try_from(l.as_micros()).unwrap_or(u64::MAX)),
                        blocked_until_unix_ms: if s.blocked_until > now { unix_ms(until) } else { 0 },
                    },
                );
            }
        }
        let written: std::io::Result<()> = Ok(());
        let at = self.breakers.now();
        for (name, until, failures) in self.breakers.open() {
            let open_until = wall + until.saturating_duration_since(at);
            file.circuits.insert(name, SavedCircuit { open_until_unix_ms: unix_ms(open_until), failures });
        }
        let now_i = Instant::now();
        let robots: Vec<(String, Arc<RobotsEntry>)> =
            lock(&self.robots).iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (url, entry) in robots {
            if let Some(f) = entry.rules.get()
                && f.until > now_i
            {
                let until = wall + f.until.saturating_duration_since(now_i);
                let saved = SavedRobots { status: f.status, body: f.body.clone(), until_unix_ms: unix_ms(until) };
                file.robots.insert(url, saved);
            }
        }
        let written = written.and_then(|()| {
            let bytes = serde_json::to_vec(&file).map_err(std::io::Error::other)?;
            let aside = self.path.with_extension("state.tmp");
            std::fs::write(&aside, bytes)?;
            std::fs::rename(&aside, &self.path)
        });
        if let Err(e) = written {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot save the politeness limiter's state; a process taking over the permit socket starts without this back-off");
        }
    }
}

/// Reads a state file into throttles at `now` (since `epoch`), open
/// circuits into `breakers` and robots.txt answers (with their crawl-delay
/// applied to their domain); entries whose block, cool-down or TTL has
/// passed and whose rate is back are dropped.
fn load(
    path: &Path,
    config: &LimitConfig,
    wall: SystemTime,
    now: Duration,
    breakers: &Breakers,
) -> (HashMap<String, Arc<Domain>>, HashMap<String, Arc<RobotsEntry>>) {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Default::default(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the politeness limiter's saved state; starting without it");
            return Default::default();
        }
    };
    let file: StateFile = match serde_json::from_slice(&bytes) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "the politeness limiter's saved state is not readable (delete the file to silence this); starting without it");
            return Default::default();
        }
    };
    let at = breakers.now();
    for (name, c) in &file.circuits {
        let left = Duration::from_millis(c.open_until_unix_ms.saturating_sub(unix_ms(wall)));
        if !left.is_zero() && breakers.policy().failures > 0 {
            tracing::info!(domain = %name, open_for_ms = left.as_millis() as u64, failures = c.failures, "taking over the open circuit of {name}");
            breakers.restore_open(name, at + left, c.failures);
        }
    }
    let wall_ms = unix_ms(wall);
    let mut out = HashMap::new();
    for (name, s) in file.domains {
        let left = Duration::from_millis(s.blocked_until_unix_ms.saturating_sub(wall_ms));
        let saved = Saved {
            rate: s.rate,
            latency: s.latency_us.map(Duration::from_micros),
            blocked_until: if left.is_zero() { Duration::ZERO } else { now + left },
        };
        let mut t = Throttle::new(config.tuning(&name).clone(), now);
        t.restore(&saved, now);
        if t.saved(now).is_some() {
            tracing::info!(domain = %name, blocked_for_ms = left.as_millis() as u64, rate = ?t.effective_rate(), "taking over the politeness back-off of {name}");
            out.insert(name.clone(), Domain::new(&name, t));
        }
    }
    let mut robots = HashMap::new();
    let at = Instant::now();
    for (url, r) in file.robots {
        let left = Duration::from_millis(r.until_unix_ms.saturating_sub(wall_ms));
        let Some(name) = Url::parse(&url).ok().as_ref().and_then(domain_of) else { continue };
        if left.is_zero() {
            continue;
        }
        let (rules, _) = Rules::from_answer(r.status, r.body.as_bytes(), &url, config.robots_ttl);
        let domain = out
            .entry(name.clone())
            .or_insert_with(|| Domain::new(&name, Throttle::new(config.tuning(&name).clone(), now)));
        lock(&domain.throttle).set_crawl_delay(rules.crawl_delay());
        tracing::info!(robots = %url, kept_for_s = left.as_secs(), crawl_delay = ?rules.crawl_delay(), "taking over the robots.txt of {url}");
        let fetched = Fetched { rules, until: at + left, status: r.status, body: r.body };
        robots.insert(url, Arc::new(RobotsEntry { rules: OnceCell::new_with(Some(fetched)) }));
    }
    (out, robots)
}

/// An origin's robots.txt as fetched: its rules until `until`, and the
/// answer they came from (saved with the limiter's state).
struct Fetched {
    rules: Rules,
    until: Instant,
    status: Option<u16>,
    body: String,
}

struct RobotsEntry {
    rules: OnceCell<Fetched>,
}

type RobotsMap = Arc<Mutex<HashMap<String, Arc<RobotsEntry>>>>;

/// One machine's (or one fallback worker's) politeness state.
pub struct Politeness {
    config: LimitConfig,
    epoch: Instant,
    domains: DomainMap,
    breakers: Arc<Breakers>,
    persist: Option<Arc<Persist>>,
    robots: RobotsMap,
    http: Option<reqwest::Client>,
}

impl std::fmt::Debug for Politeness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Politeness").field("config", &self.config).finish_non_exhaustive()
    }
}

/// Must the host learn of `outcome` when its request held no permit (a
/// pass)? A 429/503 or any `Retry-After` (the throttle blocks and tightens),
/// a 5xx or a failed connection (the circuit breaker counts it). Anything
/// else changes nothing on a domain that grants passes.
pub fn notable(outcome: &Outcome) -> bool {
    outcome.failed || outcome.retry_after.is_some() || outcome.status.is_some_and(|s| s == 429 || s >= 500)
}

/// A granted request: release it with [`Politeness::release`] (dropping it
/// releases it as "no answer").
pub struct LocalPermit {
    domain: Option<Arc<Domain>>,
    epoch: Instant,
    breakers: Option<Arc<Breakers>>,
    persist: Option<Arc<Persist>>,
    /// A pass: nothing is held (see the module's documentation).
    pass: bool,
    /// A pass that needed no robots.txt look at its URL: the permit server
    /// may lease it (`permit_server`'s Leases).
    leasable: bool,
}

impl std::fmt::Debug for LocalPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalPermit").field("limited", &self.domain.is_some()).field("pass", &self.pass).finish()
    }
}

impl LocalPermit {
    /// A pass: the request holds nothing of its domain's, and only a
    /// [`notable`] outcome needs to be told (dropping it says nothing).
    pub fn is_pass(&self) -> bool {
        self.pass || self.domain.is_none()
    }

    /// A pass whose domain's state alone allowed it (no robots.txt rule was
    /// looked up for its path): any URL of its origin would have been
    /// granted a pass too, until the domain's state changes.
    pub fn is_leasable(&self) -> bool {
        self.leasable && self.pass
    }

    /// Gives the permit back; `outcome` None: abandoned (no answer, and
    /// nothing for the circuit breaker).
    fn finish(&mut self, outcome: Option<&Outcome>) {
        if let Some(d) = self.domain.take() {
            let now = self.epoch.elapsed();
            let mut changed = if self.pass {
                // nothing held; an abandoned pass says nothing (its circuit was closed)
                let Some(o) = outcome else { return };
                lock(&d.throttle).report(now, o)
            } else {
                let c = lock(&d.throttle).release(now, outcome.unwrap_or(&Outcome::default()));
                d.released.notify_waiters();
                c
            };
            if let Some(b) = &self.breakers {
                match outcome {
                    Some(o) => {
                        let ok = o.status.map_or(!o.failed, |s| s < 500);
                        changed |=
                            matches!(b.record(&d.name, ok), Some(Transition::Opened { .. } | Transition::Closed));
                    }
                    None => b.abandon(&d.name),
                }
            }
            if changed && let Some(p) = &self.persist {
                p.save();
            }
        }
    }
}

impl Drop for LocalPermit {
    fn drop(&mut self) {
        self.finish(None);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Politeness {
    /// A limiter with `config`; robots.txt is fetched with its own client.
    pub fn new(config: LimitConfig) -> Politeness {
        Politeness::with_breaker_clock(config, Arc::new(SystemClock))
    }

    /// A limiter whose circuit breakers read `clock` (a test moves it).
    pub fn with_breaker_clock(config: LimitConfig, clock: Arc<dyn crate::breaker::Clock>) -> Politeness {
        let breakers = Arc::new(Breakers::new(config.breaker, clock));
        Politeness::build(config, Instant::now(), HashMap::new(), breakers, None)
    }

    /// A limiter whose back-off outlives it: it starts from the state saved
    /// in `state` (if any; expired entries are dropped) and saves it there on
    /// every change, reading wall-clock time from `wall`.
    pub fn persistent(config: LimitConfig, state: PathBuf, wall: Arc<dyn WallClock>) -> Politeness {
        let epoch = Instant::now();
        let breakers = Arc::new(Breakers::new(config.breaker, Arc::new(SystemClock)));
        let (loaded, loaded_robots) = load(&state, &config, wall.now(), epoch.elapsed(), &breakers);
        let domains: DomainMap = Arc::new(Mutex::new(loaded));
        let robots: RobotsMap = Arc::new(Mutex::new(loaded_robots));
        let persist = Arc::new(Persist {
            path: state,
            wall,
            epoch,
            domains: domains.clone(),
            breakers: breakers.clone(),
            robots: robots.clone(),
            writing: Mutex::new(()),
        });
        let mut p = Politeness::build(config, epoch, HashMap::new(), breakers, Some(persist));
        p.domains = domains;
        p.robots = robots;
        p
    }

    fn build(
        config: LimitConfig,
        epoch: Instant,
        domains: HashMap<String, Arc<Domain>>,
        breakers: Arc<Breakers>,
        persist: Option<Arc<Persist>>,
    ) -> Politeness {
        // no pooled connections: a fetch may run on a collecting thread's own
        // runtime, and a connection kept from it would stall other threads
        let http = crate::tls::client_builder()
            .pool_max_idle_per_host(0)
            .timeout(config.robots_timeout)
            .user_agent(concat!("dc-host/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| tracing::warn!(error = %e, "cannot build the robots.txt client; robots.txt is not fetched"))
            .ok();
        Politeness {
            config,
            epoch,
            domains: Arc::new(Mutex::new(domains)),
            breakers,
            persist,
            robots: RobotsMap::default(),
            http,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LimitConfig {
        &self.config
    }

    fn domain(&self, name: &str) -> Arc<Domain> {
        lock(&self.domains)
            .entry(name.to_string())
            .or_insert_with(|| Domain::new(name, Throttle::new(self.config.tuning(name).clone(), self.epoch.elapsed())))
            .clone()
    }

    /// Waits until a request to `url` may go, checking robots.txt first when
    /// `obey_robots`, then the domain's circuit. Err: why it is refused. The
    /// permit may be a pass ([`LocalPermit::is_pass`]); release it all the same.
    pub async fn acquire(&self, url: &Url, obey_robots: bool) -> Result<LocalPermit, Refusal> {
        self.acquire_with(url, obey_robots, true).await
    }

    /// [`Politeness::acquire`]; `may_pass` false: never a pass (a caller
    /// that releases every permit, such as a worker of an older version).
    pub async fn acquire_with(&self, url: &Url, obey_robots: bool, may_pass: bool) -> Result<LocalPermit, Refusal> {
        let Some(name) = domain_of(url) else {
            return Ok(LocalPermit {
                domain: None,
                epoch: self.epoch,
                breakers: None,
                persist: None,
                pass: true,
                leasable: false,
            });
        };
        let domain = self.domain(&name);
        // no rule to look up for this path: robots.txt not obeyed, or it allows every path
        let mut leasable = !obey_robots;
        if obey_robots && let Some(robots_url) = robots::robots_url(url) {
            let entry = self.robots_entry(&robots_url);
            let mut fetched_now = false;
            let fetched = entry
                .rules
                .get_or_init(|| {
                    fetched_now = true;
                    self.fetch_robots(&robots_url, &domain)
                })
                .await;
            if fetched_now && let Some(p) = &self.persist {
                p.save();
            }
            if let Some(why) = fetched.rules.refusal(url.as_str(), &robots_url) {
                return Err(Refusal::Robots(why));
            }
            leasable = matches!(fetched.rules, Rules::AllowAll);
        }
        // one breaker per domain for every run (an open circuit is not asked again)
        self.breakers.admit(&name).map_err(|CircuitOpen { message, .. }| Refusal::CircuitOpen(message))?;
        let mut permit = self.wait_for(domain, may_pass).await;
        permit.breakers = Some(self.breakers.clone());
        permit.leasable = leasable;
        Ok(permit)
    }

    /// Waits for the domain's permit; a pass when `may_pass`, the domain is
    /// unlimited and its circuit is closed with no failure counted.
    async fn wait_for(&self, domain: Arc<Domain>, may_pass: bool) -> LocalPermit {
        loop {
            // registered before looking, so a release in between is not missed
            let released = domain.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            let clean = may_pass && self.breakers.state(&domain.name) == State::Closed { failures: 0 };
            let (decision, pass) = {
                let mut t = lock(&domain.throttle);
                let now = self.epoch.elapsed();
                if clean && t.unlimited() { (t.try_pass(now), true) } else { (t.try_acquire(now), false) }
            };
            match decision {
                Decision::Granted => {
                    return LocalPermit {
                        domain: Some(domain.clone()),
                        epoch: self.epoch,
                        breakers: None,
                        persist: self.persist.clone(),
                        pass,
                        leasable: false,
                    };
                }
                Decision::WaitUntil(at) => {
                    tokio::time::sleep_until((self.epoch + at).into()).await;
                }
                Decision::Full => released.await,
            }
        }
    }

    /// Gives a permit back with how its request ended.
    pub fn release(&self, mut permit: LocalPermit, outcome: &Outcome) {
        permit.finish(Some(outcome));
    }

    /// How a request to `domain` that went on a pass ended (the permit
    /// server's `report`): as [`Politeness::release`] of that pass.
    pub fn report(&self, domain: &str, outcome: &Outcome) {
        let mut pass = LocalPermit {
            domain: Some(self.domain(&domain.to_ascii_lowercase())),
            epoch: self.epoch,
            breakers: Some(self.breakers.clone()),
            persist: self.persist.clone(),
            pass: true,
            leasable: false,
        };
        pass.finish(Some(outcome));
    }

    /// The entry of an origin's robots.txt, fresh (an expired one is replaced).
    fn robots_entry(&self, robots_url: &str) -> Arc<RobotsEntry> {
        let mut map = lock(&self.robots);
        let now = Instant::now();
        let expired = map.get(robots_url).and_then(|e| e.rules.get()).is_some_and(|f| f.until <= now);
        if expired {
            map.remove(robots_url);
        }
        map.entry(robots_url.to_string()).or_insert_with(|| Arc::new(RobotsEntry { rules: OnceCell::new() })).clone()
    }

    /// Fetches an origin's robots.txt, itself a request under the domain's
    /// limits, and applies its `Crawl-delay` to the domain.
    async fn fetch_robots(&self, robots_url: &str, domain: &Arc<Domain>) -> Fetched {
        let ttl = self.config.robots_ttl;
        let Some(http) = &self.http else {
            return Fetched { rules: Rules::AllowAll, until: Instant::now() + ttl, status: None, body: String::new() };
        };
        let permit = self.wait_for(domain.clone(), false).await;
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
        self.release(permit, &Outcome { status, latency: retry_after.1, retry_after: retry_after.0, failed: false });
        let (rules, keep) = Rules::from_answer(status, &body, robots_url, ttl);
        lock(&domain.throttle).set_crawl_delay(rules.crawl_delay());
        let body = String::from_utf8_lossy(&body[..body.len().min(robots::MAX_BYTES)]).into_owned();
        Fetched { rules, until: Instant::now() + keep, status, body }
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
