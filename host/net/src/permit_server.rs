//! One politeness limiter per machine: the permit server and its election.
//!
//! Every supervising process (`dc-host run`, `dc-host serve`) calls
//! [`serve_shared`] with the same well-known socket path (by default
//! `<data_dir>/run/limiter.sock`). Exactly one of them serves: the one that
//! holds the exclusive lock on `<socket>.lock` (`flock`, released by the
//! kernel when its holder exits, however it exits). The others wait for the
//! lock on a thread of their own, so when the serving process ends another
//! takes over at once; the newcomer removes the stale socket file left by
//! the old one before binding. A socket file is never trusted without the lock.
//!
//! The protocol is newline-delimited JSON on a Unix stream socket, one
//! request at a time per connection:
//!
//! ```text
//! → {"acquire":{"url":"https://example.com/a","robots":true,"pass":true}}
//! ← {"granted":{"permit":7}}          (after any wait the domain needs)
//! ← {"granted":{"permit":0}}          (a pass: nothing to release)
//! ← {"granted":{"permit":0,"lease":{"ms":1000,"generation":12}}}   (a pass the worker may keep, see Leases)
//! ← {"refused":{"reason":"disallowed by https://example.com/robots.txt for user-agent dc-host"}}
//! ← {"open":{"reason":"circuit open for host example.com after 10 consecutive failures …"}}
//! → {"release":{"permit":7,"status":200,"latency_us":1840,"retry_after_ms":null}}   (no answer)
//! → {"release":{"permit":8,"status":null,"latency_us":30000000,"retry_after_ms":null,"failed":true}}
//! → {"report":{"domain":"example.com","status":429,"latency_us":900,"retry_after_ms":2000}}   (no answer)
//! → {"watch":{}}                      (a connection of its own, from then on only answered)
//! ← {"changed":{"generation":12}}     (at once, and again on every change)
//! ```
//!
//! **Passes.** A worker that says `"pass":true` accepts permit 0, a *pass*:
//! the domain has no rate and no concurrency limit (loopback hosts by
//! default), no crawl-delay, and its circuit is closed with no failure
//! counted, so nothing is held and nothing is released. After the request
//! the worker sends a `report` only when the outcome is one the host must
//! know (`dc_net::limiter::notable`: a 429/503 or a `Retry-After`, a 5xx, a
//! failed connection or timeout); the server applies it as it would a
//! release. A pass per page is one round trip and one server wake-up instead
//! of two. Every acquire is still answered by the server, so robots.txt, an
//! open circuit and a `Retry-After` block set by any run hold for every run
//! at once; a domain with a failure counted grants held permits again, so
//! the success that resets the breaker's count is always told. A worker of
//! an older version (no `pass`) only ever gets held permits.
//!
//! **Leases.** A worker that also says `"lease":true` may get a pass with a
//! lease, `{"granted":{"permit":0,"lease":{"ms":1000,"generation":12}}}`,
//! when the pass also needs no robots.txt look per URL (robots.txt not
//! obeyed, or the origin's file allows every path: `robots::Rules::AllowAll`).
//! Until `ms` have passed, and while the server's *generation* is still the
//! one in the lease, the worker grants itself passes to that origin without
//! asking: no socket round trip at all per page. The generation counts the
//! notable outcomes the server was told (a `release` or `report` of a
//! 429/503, `Retry-After`, 5xx, failed connection or timeout: whatever can
//! block a domain, open its circuit or count a failure), and a worker learns
//! it on a watch connection of its own (`{"watch":{}}`, answered
//! `{"changed":{"generation":12}}` at once and on every change), so a 429
//! told by one run voids every run's leases as soon as its watch line
//! arrives. A worker voids its own leases before it reports a notable
//! outcome, and trusts none while its watch connection is down. The lease's
//! time bounds what the generation does not cover (a robots.txt fetched
//! again when it expires). A worker of an older version never asks for a
//! lease, and a server of an older version never grants one.
//!
//! The server runs on a current-thread tokio runtime on a thread of its own
//! (`permit-server`), so a permit is not woken through the supervisor's
//! multi-thread scheduler; it stops when the runtime whose handle started it
//! shuts down (the process ends), and the lock goes with it.
//!
//! The server also keeps one circuit breaker per domain for every run: the
//! releases tell it each attempt's outcome (`failed`: the connection failed
//! or timed out; a 5xx status is a failure too), and while a domain's circuit
//! is open every run's acquire is answered `open`, so a second run does not
//! hammer a domain the first found dead. Open circuits are saved with the
//! back-off.
//!
//! Permits belong to their connection: when a connection closes (a worker
//! killed mid-request), the permits it still holds are released as "no answer".

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::Url;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use tokio::sync::watch;

use crate::limiter::{LimitConfig, LocalPermit, Politeness, Refusal, SystemWall, WallClock, notable};
use crate::throttle::Outcome;

/// A message from a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Wait for a permit to fetch `url` (checking robots.txt when `robots`).
    Acquire {
        /// The URL to fetch.
        url: String,
        /// Obey robots.txt.
        robots: bool,
        /// The worker accepts a pass (permit 0, nothing to release).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        pass: bool,
        /// The worker takes a pass's lease (see [`Lease`]) and watches the
        /// generation on a connection of its own.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        lease: bool,
    },
    /// Turn this connection into a watch: the server answers the current
    /// generation at once and again whenever it changes, until the worker
    /// closes the connection.
    Watch {},
    /// Give a permit back (no answer is sent).
    Release {
        /// The permit.
        permit: u64,
        /// The response status; none: no response.
        status: Option<u16>,
        /// Time to the response headers, in microseconds.
        latency_us: u64,
        /// The server's `Retry-After`, in milliseconds.
        retry_after_ms: Option<u64>,
        /// No response: the connection failed or timed out.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        failed: bool,
    },
    /// How a request that went on a pass ended, when it is notable (no answer is sent).
    Report {
        /// The domain (host name) of the request.
        domain: String,
        /// The response status; none: no response.
        status: Option<u16>,
        /// Time to the response headers, in microseconds.
        latency_us: u64,
        /// The server's `Retry-After`, in milliseconds.
        retry_after_ms: Option<u64>,
        /// No response: the connection failed or timed out.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        failed: bool,
    },
}

/// The server's answer to an acquire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// Go.
    Granted {
        /// Give it back with a release; 0: a pass, nothing to give back.
        permit: u64,
        /// A pass the worker may keep granting itself for this origin.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lease: Option<Lease>,
    },
    /// The generation on a watch connection: any lease of an older one is void.
    Changed {
        /// The server's generation now.
        generation: u64,
    },
    /// robots.txt refuses the URL.
    Refused {
        /// Why.
        reason: String,
    },
    /// The domain's circuit is open.
    Open {
        /// Since when and until when.
        reason: String,
    },
    /// The request was not understood.
    Invalid {
        /// What was wrong.
        error: String,
    },
}

/// A pass a worker may keep: until `ms` milliseconds from now, while the
/// server's generation is still `generation`, the worker grants itself
/// passes to the same origin without asking (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// How long the lease lasts at most, in milliseconds.
    pub ms: u64,
    /// The generation it holds in.
    pub generation: u64,
}

/// How long a lease lasts at most: it bounds how stale a worker's view of
/// what no generation covers can get (a robots.txt fetched again when it expires).
pub const LEASE_FOR: Duration = Duration::from_secs(1);

impl Request {
    /// The release message of `permit` for `outcome`.
    pub fn release(permit: u64, outcome: &Outcome) -> Request {
        Request::Release {
            permit,
            status: outcome.status,
            latency_us: u64::try_from(outcome.latency.as_micros()).unwrap_or(u64::MAX),
            retry_after_ms: outcome.retry_after.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            failed: outcome.failed,
        }
    }

    /// The report of a pass's request to `domain` that ended with `outcome`.
    pub fn report(domain: &str, outcome: &Outcome) -> Request {
        Request::Report {
            domain: domain.to_string(),
            status: outcome.status,
            latency_us: u64::try_from(outcome.latency.as_micros()).unwrap_or(u64::MAX),
            retry_after_ms: outcome.retry_after.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            failed: outcome.failed,
        }
    }
}

fn outcome_of(status: Option<u16>, latency_us: u64, retry_after_ms: Option<u64>, failed: bool) -> Outcome {
    Outcome {
        status,
        latency: Duration::from_micros(latency_us),
        retry_after: retry_after_ms.map(Duration::from_millis),
        failed,
    }
}

/// The default socket path under a data directory.
pub fn default_socket(data_dir: &Path) -> PathBuf {
    data_dir.join("run").join("limiter.sock")
}

/// Where the server at `socket` saves the domains' back-off: `<socket>.state`
/// (by default `<data_dir>/run/limiter.state`).
pub fn state_path(socket: &Path) -> PathBuf {
    socket.with_extension("state")
}

/// Serves permits from `limiter` on `listener` until the runtime ends.
pub async fn serve(listener: UnixListener, limiter: Arc<Politeness>) {
    let ids = Arc::new(AtomicU64::new(1));
    let (generation, _) = watch::channel(0u64);
    let generation = Arc::new(generation);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(stream, limiter.clone(), ids.clone(), generation.clone()));
            }
            Err(e) => {
                tracing::warn!(error = %e, "permit server: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Applies a notable outcome's change: every lease of the generation before is void.
fn bump(generation: &watch::Sender<u64>, outcome: &Outcome) {
    if notable(outcome) {
        generation.send_modify(|g| *g += 1);
    }
}

async fn connection(
    stream: tokio::net::UnixStream,
    limiter: Arc<Politeness>,
    ids: Arc<AtomicU64>,
    generation: Arc<watch::Sender<u64>>,
) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    // dropped with the connection: released as "no answer"
    let mut held: HashMap<u64, LocalPermit> = HashMap::new();
    while let Ok(Some(line)) = lines.next_line().await {
        let answer = match serde_json::from_str::<Request>(&line) {
            Ok(Request::Release { permit, status, latency_us, retry_after_ms, failed }) => {
                if let Some(p) = held.remove(&permit) {
                    let outcome = outcome_of(status, latency_us, retry_after_ms, failed);
                    limiter.release(p, &outcome);
                    bump(&generation, &outcome);
                }
                continue;
            }
            Ok(Request::Report { domain, status, latency_us, retry_after_ms, failed }) => {
                let outcome = outcome_of(status, latency_us, retry_after_ms, failed);
                limiter.report(&domain, &outcome);
                bump(&generation, &outcome);
                continue;
            }
            Ok(Request::Watch {}) => {
                watching(lines, write, generation.subscribe()).await;
                return;
            }
            Ok(Request::Acquire { url, robots, pass, lease }) => match Url::parse(&url) {
                Err(e) => Answer::Invalid { error: format!("invalid URL {url:?}: {e}") },
                Ok(url) => {
                    // read before acquiring: a change while it waits voids the lease
                    let generation = *generation.borrow();
                    tokio::select! {
                        got = limiter.acquire_with(&url, robots, pass) => match got {
                            // nothing held: nothing to keep for a release
                            Ok(p) if p.is_pass() => Answer::Granted {
                                permit: 0,
                                lease: (lease && p.is_leasable() && limiter.config().leases).then(|| Lease {
                                    ms: u64::try_from(LEASE_FOR.as_millis()).unwrap_or(u64::MAX),
                                    generation,
                                }),
                            },
                            Ok(p) => {
                                let permit = ids.fetch_add(1, Ordering::Relaxed);
                                held.insert(permit, p);
                                Answer::Granted { permit, lease: None }
                            }
                            Err(Refusal::Robots(reason)) => Answer::Refused { reason },
                            Err(Refusal::CircuitOpen(reason)) => Answer::Open { reason },
                        },
                        // one request at a time: anything read now is the end
                        _ = lines.next_line() => return,
                    }
                }
            },
            Err(e) => Answer::Invalid { error: format!("not a permit request: {e}") },
        };
        let mut out = serde_json::to_string(&answer).unwrap_or_default();
        out.push('\n');
        if write.write_all(out.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// A watch connection: the generation now, then each change, until the
/// worker closes the connection (or sends anything).
async fn watching(
    mut lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    mut write: tokio::net::unix::OwnedWriteHalf,
    mut generation: watch::Receiver<u64>,
) {
    loop {
        let now = *generation.borrow_and_update();
        let mut out = serde_json::to_string(&Answer::Changed { generation: now }).unwrap_or_default();
        out.push('\n');
        if write.write_all(out.as_bytes()).await.is_err() {
            return;
        }
        tokio::select! {
            changed = generation.changed() => if changed.is_err() { return },
            _ = lines.next_line() => return,
        }
    }
}

/// Makes this process take part in serving `socket`: if no other process
/// holds the lock `<socket>.lock`, this one takes it, replaces any stale
/// socket file and binds it before returning (so a worker started next finds
/// the server), serving on a thread of its own; otherwise a thread waits for
/// the lock and takes over when the serving process ends. Serving lasts as
/// long as the runtime of `handle` (the process). The answer turns true when this process serves. Err: the
/// directory or lock file cannot be made (this process never serves; its
/// workers still find another process's server).
pub fn serve_shared(
    socket: &Path,
    config: LimitConfig,
    handle: tokio::runtime::Handle,
) -> std::io::Result<watch::Receiver<bool>> {
    serve_shared_with_clock(socket, config, handle, Arc::new(SystemWall))
}

/// [`serve_shared`] reading wall-clock time (for the saved back-off) from `wall`.
pub fn serve_shared_with_clock(
    socket: &Path,
    config: LimitConfig,
    handle: tokio::runtime::Handle,
    wall: Arc<dyn WallClock>,
) -> std::io::Result<watch::Receiver<bool>> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let lock_path = socket.with_extension("lock");
    let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path)?;
    let socket = socket.to_path_buf();
    let (serving, answer) = watch::channel(false);
    match lock.try_lock() {
        Ok(()) => {
            take_over(lock, &socket, config, &handle, serving, wall);
            Ok(answer)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            std::thread::Builder::new().name("permit-server-standby".into()).spawn(move || {
                // blocks while another process serves
                match lock.lock() {
                    Ok(()) => take_over(lock, &socket, config, &handle, serving, wall),
                    Err(e) => {
                        tracing::warn!(path = %lock_path.display(), error = %e, "cannot lock the permit server's lock file; this process does not serve permits")
                    }
                }
            })?;
            Ok(answer)
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// With the lock held: replaces a stale socket file, binds, and serves.
fn take_over(
    lock: std::fs::File,
    socket: &Path,
    config: LimitConfig,
    handle: &tokio::runtime::Handle,
    serving: watch::Sender<bool>,
    wall: Arc<dyn WallClock>,
) {
    match std::fs::remove_file(socket) {
        Ok(()) => tracing::debug!(path = %socket.display(), "removed the stale permit socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %socket.display(), error = %e, "cannot remove the stale permit socket"),
    }
    let bound = std::os::unix::net::UnixListener::bind(socket).and_then(|l| {
        l.set_nonblocking(true)?;
        Ok(l)
    });
    let listener = match bound {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(path = %socket.display(), error = %e, "cannot bind the permit socket; workers limit their requests on their own");
            return;
        }
    };
    let path = socket.to_path_buf();
    // before anything is served: the predecessor's back-off holds from the first permit
    let limiter = Arc::new(Politeness::persistent(config, state_path(socket), wall));
    // the server stops when the runtime of `handle` shuts down (this task is dropped)
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    handle.spawn(async move {
        let _stop = stop;
        std::future::pending::<()>().await
    });
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the permit server's runtime; workers limit their requests on their own");
            return;
        }
    };
    // bound: connections wait in the backlog until they are accepted
    let _ = serving.send(true);
    let spawned = std::thread::Builder::new().name("permit-server".into()).spawn(move || {
        // the lock is held for as long as this thread serves
        let _lock = lock;
        let _serving = serving;
        runtime.block_on(async {
            match UnixListener::from_std(listener) {
                Ok(l) => {
                    tracing::debug!(path = %path.display(), "serving politeness permits");
                    tokio::select! {
                        () = serve(l, limiter) => {}
                        _ = stopped => tracing::debug!(path = %path.display(), "the process ends: no longer serving permits"),
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot serve the permit socket"),
            }
        });
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the permit server's thread; workers limit their requests on their own");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_format_is_newline_json() {
        let r = Request::Acquire { url: "http://h/".into(), robots: true, pass: false, lease: false };
        assert_eq!(serde_json::to_string(&r).expect("json"), r#"{"acquire":{"url":"http://h/","robots":true}}"#);
        let r = Request::Acquire { url: "http://h/".into(), robots: false, pass: true, lease: false };
        assert_eq!(
            serde_json::to_string(&r).expect("json"),
            r#"{"acquire":{"url":"http://h/","robots":false,"pass":true}}"#
        );
        let old: Request = serde_json::from_str(r#"{"acquire":{"url":"http://h/","robots":true}}"#).expect("parses");
        assert_eq!(
            old,
            Request::Acquire { url: "http://h/".into(), robots: true, pass: false, lease: false },
            "an older worker"
        );
        let r = Request::Acquire { url: "http://h/".into(), robots: false, pass: true, lease: true };
        assert_eq!(
            serde_json::to_string(&r).expect("json"),
            r#"{"acquire":{"url":"http://h/","robots":false,"pass":true,"lease":true}}"#
        );
        assert_eq!(serde_json::to_string(&Request::Watch {}).expect("json"), r#"{"watch":{}}"#);
        let leased = Answer::Granted { permit: 0, lease: Some(Lease { ms: 1000, generation: 4 }) };
        assert_eq!(
            serde_json::to_string(&leased).expect("json"),
            r#"{"granted":{"permit":0,"lease":{"ms":1000,"generation":4}}}"#
        );
        assert_eq!(
            serde_json::to_string(&Answer::Changed { generation: 5 }).expect("json"),
            r#"{"changed":{"generation":5}}"#
        );
        let rep = Request::report(
            "h",
            &Outcome { status: Some(503), latency: Duration::from_micros(9), ..Outcome::default() },
        );
        assert_eq!(
            serde_json::to_string(&rep).expect("json"),
            r#"{"report":{"domain":"h","status":503,"latency_us":9,"retry_after_ms":null}}"#
        );
        let rel = Request::release(
            7,
            &Outcome {
                status: Some(429),
                latency: Duration::from_micros(1500),
                retry_after: Some(Duration::from_secs(2)),
                failed: false,
            },
        );
        assert_eq!(
            serde_json::to_string(&rel).expect("json"),
            r#"{"release":{"permit":7,"status":429,"latency_us":1500,"retry_after_ms":2000}}"#
        );
        let a: Answer = serde_json::from_str(r#"{"granted":{"permit":3}}"#).expect("parses");
        assert_eq!(a, Answer::Granted { permit: 3, lease: None }, "an older server's grant");
    }
}
