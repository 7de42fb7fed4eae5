//! The proxy manager of one run.
//!
//! [`ProxyManager::start`] takes the provider's endpoints, learns each one's
//! exit IP from the judges (when `proxy.judges` is set; a proxy no judge
//! answers through is skipped), and reserves each exit in
//! `dc_proxy_reservations` — an exit another run holds is skipped, so two
//! runs never share one. The reserved proxies are the run's pool.
//!
//! [`ProxyManager::lease`] picks the proxy for one request: the next one in
//! the pool (rotation per request) or the collecting thread's own (rotation
//! per session; a thread whose proxy is retired moves to the next). With
//! BrightData and rotation per request there is no pool: every request gets
//! a new session id, so a new exit. [`ProxyManager::report`] judges the
//! answer (see `health`), counts it per proxy and retires a proxy whose
//! health score falls below `proxy.retire_below`, saying so in the run's log.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::Duration;

use chrono::{DateTime, Utc};
use dc_core::Database;
use dc_core::proxy_store::{self, Candidate, Holder};
use dc_core::settings::{ProxyRotate, Settings};
use serde::Serialize;

use crate::endpoint::Endpoint;
use crate::health::{Health, Verdict, judge_response};
use crate::provider::ProxyProvider;
use crate::{ProxyError, judge};

/// How a run uses its proxies.
#[derive(Debug, Clone)]
pub struct ManagerOptions {
    /// Rotation per request or per session.
    pub rotate: ProxyRotate,
    /// Judge URLs (empty: exits are not verified and are reserved by endpoint).
    pub judges: Vec<String>,
    /// Statuses that count as a ban.
    pub ban_statuses: Vec<u16>,
    /// Retire a proxy whose score falls below this.
    pub retire_below: f64,
    /// Request timeout of the proxies' clients.
    pub timeout: Duration,
    /// User agent of the proxies' clients.
    pub user_agent: String,
    /// The run reserving.
    pub runtime_id: dc_core::RuntimeId,
    /// Its host.
    pub host_name: String,
    /// Now (injected).
    pub now: DateTime<Utc>,
    /// How long a reservation lasts if nothing releases it.
    pub ttl: Duration,
}

impl ManagerOptions {
    /// The options `settings` give a run of the app at `app_path`.
    pub fn from_settings(
        s: &Settings,
        app_path: &str,
        runtime_id: &dc_core::RuntimeId,
        now: DateTime<Utc>,
    ) -> ManagerOptions {
        let p = &s.proxy;
        let ttl = p
            .reservation_ttl_secs
            .unwrap_or(s.runs.time_limit_secs.saturating_add(s.runs.stop_grace_secs).saturating_add(60));
        ManagerOptions {
            rotate: p.rotate_for(app_path),
            judges: p.judges.clone(),
            ban_statuses: p.ban_statuses.clone(),
            retire_below: p.retire_below,
            timeout: Duration::from_secs(s.runs.http_timeout_secs),
            user_agent: concat!("dc-host/", env!("CARGO_PKG_VERSION")).to_string(),
            runtime_id: runtime_id.clone(),
            host_name: s.host_name(),
            now,
            ttl: Duration::from_secs(ttl),
        }
    }
}

/// Counters of one proxy (or, with a new BrightData session per request,
/// of all of them together).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ProxyStats {
    /// The proxy, without its password.
    pub proxy: String,
    /// Its exit IP, if a judge told it.
    pub exit_ip: Option<String>,
    /// Requests sent through it.
    pub requests: u64,
    /// Answers that were neither bans nor failures.
    pub good: u64,
    /// Bans (ban statuses, CAPTCHA pages).
    pub bans: u64,
    /// Requests without an answer.
    pub failures: u64,
    /// Health score.
    pub score: f64,
    /// Retired for the rest of the run.
    pub retired: bool,
}

struct Entry {
    endpoint: Endpoint,
    stats: Mutex<(Health, ProxyStats)>,
}

/// The proxy one request goes through.
#[derive(Debug, Clone)]
pub struct Lease {
    /// The proxy, without its password.
    pub proxy: String,
    index: Option<usize>,
    /// A new exit per request: its endpoint (not in the pool).
    fresh: Option<Endpoint>,
}

impl Lease {
    /// The pool entry this lease is (the same for every lease of one proxy),
    /// or none for a new exit made for this request alone: a caller that
    /// keeps clients of its own ([`ProxyManager::new_client`]) keys them by it.
    pub fn pool_index(&self) -> Option<usize> {
        self.index
    }
}

/// The redirects a judge's client follows (reqwest's default, and the
/// plugin interface's `FollowRedirects::DEFAULT_MAX`).
pub const DEFAULT_REDIRECTS: u32 = 10;

/// The proxies of one run.
pub struct ProxyManager {
    provider: Arc<dyn ProxyProvider>,
    opts: ManagerOptions,
    pool: Vec<Entry>,
    /// Rotation per request with a provider that makes a new exit per request.
    fresh: Option<Mutex<(Health, ProxyStats)>>,
    next: AtomicUsize,
    sticky: Mutex<HashMap<ThreadId, usize>>,
    /// The proxy each thread leased last (rotation per request).
    last: Mutex<HashMap<ThreadId, usize>>,
}

impl std::fmt::Debug for ProxyManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyManager").field("provider", &self.provider).field("pool", &self.pool.len()).finish()
    }
}

/// A client through `ep`'s proxy; cookies go to `jar` when given (a
/// collecting thread's client, which sends one request at a time and so
/// keeps at most one idle connection), else to a store of the client's own
/// (a judge's).
fn client_for(
    ep: &Endpoint,
    opts: &ManagerOptions,
    redirects: u32,
    jar: Option<Arc<reqwest::cookie::Jar>>,
) -> Result<reqwest::Client, ProxyError> {
    let redirect = if redirects == 0 {
        reqwest::redirect::Policy::none()
    } else {
        reqwest::redirect::Policy::limited(redirects as usize)
    };
    let b = dc_net::tls::client_builder().proxy(ep.to_reqwest()?).redirect(redirect);
    let b = match jar {
        Some(jar) => b.cookie_provider(jar).pool_max_idle_per_host(1),
        None => b.cookie_store(true),
    };
    b.timeout(opts.timeout)
        .user_agent(opts.user_agent.clone())
        .build()
        .map_err(|e| ProxyError::Config(format!("cannot build an HTTP client for proxy {}: {e}", ep.shown())))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ProxyManager {
    /// Verifies and reserves the run's proxies (see the module docs); fails
    /// when none can be used, saying why.
    pub async fn start(
        provider: Arc<dyn ProxyProvider>,
        db: &Database,
        opts: ManagerOptions,
    ) -> Result<Arc<ProxyManager>, ProxyError> {
        if opts.rotate == ProxyRotate::Request && provider.fresh().is_some() {
            tracing::info!(provider = provider.name(), "proxies: a new exit for every request (no reservation)");
            let stats =
                ProxyStats { proxy: format!("{} (a new session per request)", provider.name()), ..Default::default() };
            return Ok(Arc::new(ProxyManager {
                provider,
                opts,
                pool: Vec::new(),
                fresh: Some(Mutex::new((Health::default(), stats))),
                next: AtomicUsize::new(0),
                sticky: Mutex::default(),
                last: Mutex::default(),
            }));
        }
        let endpoints = provider.endpoints().await?;
        let holder = Holder {
            runtime_id: &opts.runtime_id,
            host_name: &opts.host_name,
            now: opts.now,
            expires_at: opts.now + chrono::Duration::from_std(opts.ttl).unwrap_or(chrono::Duration::hours(24)),
        };
        let (mut pool, mut held, mut unverified) = (Vec::new(), 0usize, 0usize);
        for ep in &endpoints {
            let shown = ep.shown();
            // a proxy reqwest cannot use fails the start, judges or not
            ep.to_reqwest()?;
            let exit_ip: Option<IpAddr> = if opts.judges.is_empty() {
                None
            } else {
                let client = client_for(ep, &opts, DEFAULT_REDIRECTS, None)?;
                match judge::exit_ip(&client, &opts.judges, &shown).await {
                    Ok((ip, _)) => Some(ip),
                    Err(e) => {
                        tracing::warn!(proxy = %shown, "{e}");
                        unverified += 1;
                        continue;
                    }
                }
            };
            let exit_key = exit_ip.map(|ip| format!("ip:{ip}")).unwrap_or_else(|| ep.key.clone());
            if !proxy_store::reserve(db, &Candidate { exit_key: exit_key.clone(), proxy: shown.clone() }, holder)
                .await?
            {
                tracing::info!(proxy = %shown, exit = %exit_key, "proxy exit held by another run (or by another proxy of this run); skipped");
                held += 1;
                continue;
            }
            let stats = ProxyStats {
                proxy: shown,
                exit_ip: exit_ip.map(|ip| ip.to_string()),
                score: 1.0,
                ..Default::default()
            };
            pool.push(Entry { endpoint: ep.clone(), stats: Mutex::new((Health::default(), stats)) });
        }
        if pool.is_empty() {
            return Err(ProxyError::Unavailable(format!(
                "no proxy is free for this run: of {} proxies, {held} have an exit another run holds (see dc_proxy_reservations) and {unverified} could not be verified by any proxy judge; add proxies or wait for the other runs",
                endpoints.len()
            )));
        }
        tracing::info!(
            provider = provider.name(),
            proxies = pool.len(),
            held,
            unverified,
            rotate = ?opts.rotate,
            "proxies reserved for the run"
        );
        Ok(Arc::new(ProxyManager {
            provider,
            opts,
            pool,
            fresh: None,
            next: AtomicUsize::new(0),
            sticky: Mutex::default(),
            last: Mutex::default(),
        }))
    }

    fn usable(&self, i: usize) -> bool {
        !lock(&self.pool[i].stats).1.retired
    }

    fn lease_of(&self, i: usize) -> Lease {
        let e = &self.pool[i];
        Lease { proxy: lock(&e.stats).1.proxy.clone(), index: Some(i), fresh: None }
    }

    fn all_retired(&self) -> ProxyError {
        ProxyError::Unavailable(format!(
            "every proxy of this run ({}) is retired (banned or failing); the request is not sent without a proxy, which would show the host's own address",
            self.pool.len()
        ))
    }

    /// The proxy for the next request of the calling thread.
    pub fn lease(&self) -> Result<Lease, ProxyError> {
        if self.fresh.is_some() {
            let ep =
                self.provider.fresh().ok_or_else(|| ProxyError::Unavailable("the provider has no new exit".into()))?;
            return Ok(Lease { proxy: ep.shown(), index: None, fresh: Some(ep) });
        }
        let n = self.pool.len();
        match self.opts.rotate {
            ProxyRotate::Request => {
                for _ in 0..n {
                    let i = self.next.fetch_add(1, Ordering::Relaxed) % n;
                    if self.usable(i) {
                        lock(&self.last).insert(std::thread::current().id(), i);
                        return Ok(self.lease_of(i));
                    }
                }
                Err(self.all_retired())
            }
            ProxyRotate::Session => {
                let me = std::thread::current().id();
                let mut sticky = lock(&self.sticky);
                if let Some(&i) = sticky.get(&me)
                    && self.usable(i)
                {
                    return Ok(self.lease_of(i));
                }
                for _ in 0..n {
                    let i = self.next.fetch_add(1, Ordering::Relaxed) % n;
                    if self.usable(i) {
                        sticky.insert(me, i);
                        return Ok(self.lease_of(i));
                    }
                }
                Err(self.all_retired())
            }
        }
    }

    /// A new client through `lease`'s proxy that follows at most `redirects`
    /// redirects (0: none) and keeps cookies in `jar`: for a collecting
    /// thread, which keeps one per proxy of the pool (by
    /// [`Lease::pool_index`]) so its requests and their connections stay on
    /// the thread's own runtime.
    pub fn new_client(
        &self,
        lease: &Lease,
        redirects: u32,
        jar: Arc<reqwest::cookie::Jar>,
    ) -> Result<reqwest::Client, ProxyError> {
        let ep = match (lease.index.and_then(|i| self.pool.get(i)), &lease.fresh) {
            (Some(e), _) => &e.endpoint,
            (None, Some(ep)) => ep,
            (None, None) => return Err(ProxyError::Unavailable("the lease names no proxy of this run".into())),
        };
        client_for(ep, &self.opts, redirects, Some(jar))
    }

    /// Counts what a request through `lease` came to: `Some((status, body))`
    /// for an answer, none for no answer. Retires the proxy when its score
    /// falls below the threshold.
    pub fn report(&self, lease: &Lease, answer: Option<(u16, &[u8])>) {
        let verdict = match answer {
            Some((status, body)) => judge_response(status, body, &self.opts.ban_statuses),
            None => Verdict::Failure,
        };
        self.note(lease.index, verdict, answer.map(|a| a.0));
    }

    /// Counts `verdict` for the pool entry `index` (None: the fresh exits).
    fn note(&self, index: Option<usize>, verdict: Verdict, status: Option<u16>) {
        let cell = match (index, &self.fresh) {
            (Some(i), _) => &self.pool[i].stats,
            (None, Some(f)) => f,
            (None, None) => return,
        };
        let mut guard = lock(cell);
        let (health, stats) = &mut *guard;
        stats.requests += 1;
        match verdict {
            Verdict::Good => stats.good += 1,
            Verdict::Ban => stats.bans += 1,
            Verdict::Failure => stats.failures += 1,
        }
        stats.score = health.note(verdict);
        if verdict == Verdict::Ban {
            tracing::debug!(proxy = %stats.proxy, status, score = stats.score, "ban through proxy");
        }
        if index.is_some() && !stats.retired && stats.score < self.opts.retire_below {
            stats.retired = true;
            tracing::warn!(
                proxy = %stats.proxy,
                score = stats.score,
                requests = stats.requests,
                bans = stats.bans,
                failures = stats.failures,
                "proxy retired for the rest of the run: its health score fell below proxy.retire_below ({})",
                self.opts.retire_below
            );
        }
    }

    /// The pool entry the calling thread uses: its own (rotation per
    /// session) or the one it leased last (per request).
    fn thread_index(&self) -> Option<usize> {
        let me = std::thread::current().id();
        match self.opts.rotate {
            ProxyRotate::Session => lock(&self.sticky).get(&me).copied(),
            ProxyRotate::Request => lock(&self.last).get(&me).copied(),
        }
    }

    /// The counters of the proxy the calling thread uses (what a plugin's
    /// `proxy.current` answers): its own, or the one it leased last; with a
    /// new exit per request, the provider's. Before the thread's first
    /// request, the proxy it will get.
    pub fn current(&self) -> Result<ProxyStats, ProxyError> {
        if let Some(f) = &self.fresh {
            return Ok(lock(f).1.clone());
        }
        match self.thread_index().filter(|&i| self.usable(i)) {
            Some(i) => Ok(lock(&self.pool[i].stats).1.clone()),
            None => self.rotate(),
        }
    }

    /// Moves the calling thread to the next usable proxy other than its
    /// current one (when there is another) and returns its counters (a
    /// plugin's `proxy.rotate`). With rotation per request the thread's next
    /// request takes it.
    pub fn rotate(&self) -> Result<ProxyStats, ProxyError> {
        if let Some(f) = &self.fresh {
            return Ok(lock(f).1.clone());
        }
        let n = self.pool.len();
        let from = self.thread_index();
        let mut pick = None;
        for _ in 0..n {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % n;
            if self.usable(i) {
                pick = pick.or(Some(i));
                if Some(i) != from {
                    pick = Some(i);
                    break;
                }
            }
        }
        let i = pick.ok_or_else(|| self.all_retired())?;
        let me = std::thread::current().id();
        match self.opts.rotate {
            ProxyRotate::Session => {
                lock(&self.sticky).insert(me, i);
            }
            ProxyRotate::Request => {
                // the next lease takes entry i
                self.next.store(i, Ordering::Relaxed);
                lock(&self.last).insert(me, i);
            }
        }
        Ok(lock(&self.pool[i].stats).1.clone())
    }

    /// A plugin's verdict on the proxy its thread uses (`proxy.report`):
    /// counted like an answer's, so a ban lowers the health score (and may
    /// retire the proxy); after a ban the thread moves to the next proxy.
    /// Returns the counters of the proxy the thread uses afterwards.
    pub fn report_current(&self, verdict: Verdict) -> Result<ProxyStats, ProxyError> {
        let index = if self.fresh.is_some() {
            None
        } else {
            self.current()?;
            self.thread_index()
        };
        self.note(index, verdict, None);
        if verdict == Verdict::Ban { self.rotate() } else { self.current() }
    }

    /// Per-proxy counters, in pool order.
    pub fn stats(&self) -> Vec<ProxyStats> {
        let mut out: Vec<ProxyStats> = self.pool.iter().map(|e| lock(&e.stats).1.clone()).collect();
        if let Some(f) = &self.fresh {
            out.push(lock(f).1.clone());
        }
        out
    }

    /// Logs the per-proxy counters (at the end of a run).
    pub fn log_summary(&self) {
        for s in self.stats() {
            tracing::info!(
                proxy = %s.proxy,
                exit_ip = s.exit_ip.as_deref().unwrap_or("-"),
                requests = s.requests,
                good = s.good,
                bans = s.bans,
                failures = s.failures,
                score = s.score,
                retired = s.retired,
                "proxy stats"
            );
        }
    }
}
