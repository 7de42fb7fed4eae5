//! The worker's side of the one-limiter-per-machine rule: [`PermitClient`]
//! speaks the permit server's protocol (`permit_server`) over pooled
//! connections, and [`HostLimiter`] is what a run's requests go through — the
//! server when it answers, else an in-process limiter of the run's own (with
//! a warning, once), asking the server again a few seconds later.
//!
//! The client accepts passes (permit 0, see `permit_server`): a pass's
//! connection goes back to the pool as soon as it is granted, and its release
//! sends a `report` only for a notable outcome (`crate::limiter::notable`),
//! else nothing at all.
//!
//! [`HostLimiter`] also asks for leases (see `permit_server`'s Leases): a
//! leased origin's passes are granted here without a round trip while the
//! lease lasts and the generation read on the client's watch connection is
//! still the lease's. The watch connection is opened with the first lease
//! (on the client's home runtime, [`PermitClient::homed`], else the tokio
//! runtime the acquire runs on); while it is down no lease is
//! trusted, and a new one starts with no leases kept. A notable outcome
//! voids the client's leases before it is reported.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use reqwest::Url;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::runtime::Handle;
use tokio::sync::watch;

use crate::limiter::{LimitConfig, LocalPermit, Politeness, Refusal, domain_of, notable};
use crate::permit_server::{Answer, Lease, Request};
use crate::throttle::Outcome;

/// How long a worker limits on its own before asking the server again.
pub const RECONNECT_AFTER: Duration = Duration::from_secs(5);

struct Conn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    line: String,
}

impl Conn {
    /// A connection to the server at `path`, registered with `home`'s I/O
    /// driver when given (else the current runtime's): a pooled connection
    /// is used from any thread, so it must not belong to a runtime that
    /// only runs while one thread waits on it.
    async fn open(path: &Path, home: Option<&Handle>) -> std::io::Result<Conn> {
        let stream = match home {
            Some(home) => {
                // a local socket that is listening takes the connection at
                // once (blocking only while its accept queue is full)
                let std = std::os::unix::net::UnixStream::connect(path)?;
                std.set_nonblocking(true)?;
                let _in_home = home.enter();
                UnixStream::from_std(std)?
            }
            None => UnixStream::connect(path).await?,
        };
        let (r, w) = stream.into_split();
        Ok(Conn { reader: BufReader::new(r), writer: w, line: String::new() })
    }

    async fn send(&mut self, req: &Request) -> std::io::Result<()> {
        let mut out = serde_json::to_string(req).map_err(std::io::Error::other)?;
        out.push('\n');
        self.writer.write_all(out.as_bytes()).await
    }

    async fn ask(&mut self, req: &Request) -> std::io::Result<Answer> {
        self.send(req).await?;
        self.line.clear();
        if self.reader.read_line(&mut self.line).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the permit server closed the connection",
            ));
        }
        serde_json::from_str(&self.line).map_err(std::io::Error::other)
    }
}

/// A permit the server granted; a held one keeps its connection until
/// released (closing it gives the permit back), a pass holds nothing.
pub struct RemotePermit {
    held: Option<(Conn, u64)>,
    /// The domain a pass's report names.
    domain: String,
}

impl RemotePermit {
    /// A pass: nothing is held, and its release sends nothing unless the
    /// outcome is notable.
    pub fn is_pass(&self) -> bool {
        self.held.is_none()
    }
}

impl std::fmt::Debug for RemotePermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemotePermit").field("id", &self.held.as_ref().map_or(0, |(_, id)| *id)).finish()
    }
}

/// A client of the permit server at one socket path.
pub struct PermitClient {
    path: PathBuf,
    idle: Mutex<Vec<Conn>>,
    leases: Mutex<Leases>,
    /// The runtime its connections and its watch task belong to (None: the
    /// one the call runs on).
    home: Option<Handle>,
}

/// The generation a watch connection has not answered yet.
const UNSYNCED: u64 = u64::MAX;

/// The leases a client holds and the watch that keeps them valid.
#[derive(Default)]
struct Leases {
    /// The generation read on the watch connection (closed: the connection is down).
    watch: Option<watch::Receiver<u64>>,
    by_origin: HashMap<String, Leased>,
}

struct Leased {
    domain: String,
    generation: u64,
    until: Instant,
}

/// The origin part of an http(s) URL (`scheme://host:port`, with any user
/// info), borrowed: what a lease is kept under.
fn origin(url: &Url) -> &str {
    let s = url.as_str();
    let tail = url.path().len() + url.query().map_or(0, |q| q.len() + 1) + url.fragment().map_or(0, |f| f.len() + 1);
    s.get(..s.len().saturating_sub(tail)).unwrap_or(s)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads the watch connection `conn` into `generation` until either ends.
async fn watch_generation(path: PathBuf, generation: watch::Sender<u64>) {
    let Ok(mut conn) = Conn::open(&path, None).await else { return };
    if conn.send(&Request::Watch {}).await.is_err() {
        return;
    }
    loop {
        conn.line.clear();
        let read = tokio::select! {
            read = conn.reader.read_line(&mut conn.line) => read,
            () = generation.closed() => return,
        };
        match read {
            Ok(n) if n > 0 => {}
            // the server went away: the sender is dropped, and no lease is trusted
            _ => return,
        }
        match serde_json::from_str(&conn.line) {
            Ok(Answer::Changed { generation: g }) => generation.send_replace(g),
            _ => return,
        };
    }
}

impl std::fmt::Debug for PermitClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PermitClient").field("path", &self.path).finish_non_exhaustive()
    }
}

impl PermitClient {
    /// A client of the server at `path` (connections are made when needed).
    pub fn new(path: impl Into<PathBuf>) -> PermitClient {
        PermitClient { path: path.into(), idle: Mutex::default(), leases: Mutex::default(), home: None }
    }

    /// This client with its connections and its watch task on `home`, so
    /// calls may come from other runtimes (a collecting thread's own).
    pub fn homed(mut self, home: Handle) -> PermitClient {
        self.home = Some(home);
        self
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn idle(&self) -> Option<Conn> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    fn pool(&self, mut conn: Conn) {
        conn.line.clear();
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
    }

    /// A pass to `url` from a lease this client holds for its origin, if
    /// one holds now: no round trip.
    pub fn leased(&self, url: &Url) -> Option<RemotePermit> {
        let leases = lock(&self.leases);
        let watch = leases.watch.as_ref()?;
        if watch.has_changed().is_err() {
            return None;
        }
        let generation = *watch.borrow();
        let lease = leases.by_origin.get(origin(url))?;
        (lease.generation == generation && Instant::now() < lease.until)
            .then(|| RemotePermit { held: None, domain: lease.domain.clone() })
    }

    /// The generation this client's watch connection has read (changed on
    /// every notable outcome the server is told); None before the first
    /// lease, or while the watch connection is down.
    pub fn watched_generation(&self) -> Option<watch::Receiver<u64>> {
        lock(&self.leases).watch.clone().filter(|w| w.has_changed().is_ok())
    }

    /// Keeps `lease` for `url`'s origin, asked for at `asked`, if the watch
    /// connection has read the lease's generation (starting the watch
    /// connection if it is not up, with no lease kept from before).
    fn keep(&self, url: &Url, domain: &str, lease: Lease, asked: Instant) {
        let mut leases = lock(&self.leases);
        let up = leases.watch.as_ref().is_some_and(|w| w.has_changed().is_ok());
        if !up {
            let Some(rt) = self.home.clone().or_else(|| Handle::try_current().ok()) else { return };
            let (tx, rx) = watch::channel(UNSYNCED);
            leases.watch = Some(rx);
            leases.by_origin.clear();
            rt.spawn(watch_generation(self.path.clone(), tx));
            return;
        }
        let seen = leases.watch.as_ref().map_or(UNSYNCED, |w| *w.borrow());
        if seen == lease.generation {
            let leased = Leased {
                domain: domain.to_string(),
                generation: lease.generation,
                until: asked + Duration::from_millis(lease.ms),
            };
            leases.by_origin.insert(origin(url).to_string(), leased);
        }
    }

    /// Voids every lease of this client (a notable outcome is about to be told).
    fn void_leases(&self) {
        lock(&self.leases).by_origin.clear();
    }

    /// Waits for a permit to fetch `url`. Outer Err: the server cannot be
    /// reached; inner Err: why it refused (robots.txt, an open circuit).
    pub async fn acquire(&self, url: &Url, robots: bool) -> std::io::Result<Result<RemotePermit, Refusal>> {
        self.ask(url, robots, false).await
    }

    /// [`PermitClient::acquire`], taking the lease the server may grant with
    /// a pass: later passes to the origin come from [`PermitClient::leased`].
    pub async fn acquire_leasing(&self, url: &Url, robots: bool) -> std::io::Result<Result<RemotePermit, Refusal>> {
        self.ask(url, robots, true).await
    }

    async fn ask(&self, url: &Url, robots: bool, lease: bool) -> std::io::Result<Result<RemotePermit, Refusal>> {
        let asked = Instant::now();
        let req = Request::Acquire { url: url.to_string(), robots, pass: true, lease };
        // a pooled connection may have gone stale (the server was replaced): one fresh try
        let (conn, answer) = match self.idle() {
            Some(mut c) => match c.ask(&req).await {
                Ok(a) => (c, a),
                Err(_) => {
                    let mut c = Conn::open(&self.path, self.home.as_ref()).await?;
                    let a = c.ask(&req).await?;
                    (c, a)
                }
            },
            None => {
                let mut c = Conn::open(&self.path, self.home.as_ref()).await?;
                let a = c.ask(&req).await?;
                (c, a)
            }
        };
        match answer {
            Answer::Granted { permit: 0, lease: granted } => {
                self.pool(conn);
                let domain = domain_of(url).unwrap_or_default();
                if let Some(l) = granted.filter(|_| lease) {
                    self.keep(url, &domain, l, asked);
                }
                Ok(Ok(RemotePermit { held: None, domain }))
            }
            Answer::Granted { permit, .. } => {
                Ok(Ok(RemotePermit { held: Some((conn, permit)), domain: String::new() }))
            }
            Answer::Refused { reason } => {
                self.pool(conn);
                Ok(Err(Refusal::Robots(reason)))
            }
            Answer::Open { reason } => {
                self.pool(conn);
                Ok(Err(Refusal::CircuitOpen(reason)))
            }
            Answer::Invalid { error } => Err(std::io::Error::other(format!("the permit server refused: {error}"))),
            Answer::Changed { .. } => Err(std::io::Error::other("the permit server answered an acquire as a watch")),
        }
    }

    /// Gives a permit back (a connection that fails is dropped, and the
    /// server releases what it held). A pass sends a report only for a
    /// notable outcome, on a pooled connection (so the next acquire on it is
    /// read after the report).
    pub async fn release(&self, permit: RemotePermit, outcome: &Outcome) {
        let RemotePermit { held, domain } = permit;
        if let Some((mut conn, id)) = held {
            if conn.send(&Request::release(id, outcome)).await.is_ok() {
                self.pool(conn);
            }
            return;
        }
        if !notable(outcome) {
            return;
        }
        // this client's next requests ask the server again at once
        self.void_leases();
        let req = Request::report(&domain, outcome);
        let pooled = match self.idle() {
            Some(mut c) => c.send(&req).await.is_ok().then_some(c),
            None => None,
        };
        // a pooled connection gone stale (the server was replaced): one fresh try
        let conn = match pooled {
            Some(c) => Some(c),
            None => match Conn::open(&self.path, self.home.as_ref()).await {
                Ok(mut c) => c.send(&req).await.is_ok().then_some(c),
                Err(_) => None,
            },
        };
        match conn {
            Some(c) => self.pool(c),
            None => tracing::debug!(%domain, "the permit server cannot be reached to report an outcome"),
        }
    }
}

/// A granted request of a run.
#[derive(Debug)]
pub enum Permit {
    /// From the machine's permit server.
    Remote(RemotePermit),
    /// From the run's own limiter (the server was unreachable).
    Local(LocalPermit),
}

/// What a run's requests go through: the machine's permit server, or a
/// limiter of the run's own when that cannot be reached.
pub struct HostLimiter {
    remote: Option<PermitClient>,
    config: LimitConfig,
    local: OnceLock<Arc<Politeness>>,
    obey_robots: bool,
    opt_out: String,
    warned: AtomicBool,
    remote_again_at: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for HostLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostLimiter")
            .field("remote", &self.remote)
            .field("obey_robots", &self.obey_robots)
            .finish_non_exhaustive()
    }
}

impl HostLimiter {
    /// A limiter asking the server at `socket` (None: limit in-process
    /// only), obeying robots.txt when `obey_robots`; `opt_out` is appended to
    /// a robots.txt refusal to say how to opt out.
    pub fn new(socket: Option<PathBuf>, config: LimitConfig, obey_robots: bool, opt_out: String) -> HostLimiter {
        HostLimiter {
            remote: socket.map(PermitClient::new),
            config,
            local: OnceLock::new(),
            obey_robots,
            opt_out,
            warned: AtomicBool::new(false),
            remote_again_at: Mutex::new(None),
        }
    }

    /// This limiter with its permit server connections on `home`
    /// ([`PermitClient::homed`]).
    pub fn homed(mut self, home: Handle) -> HostLimiter {
        self.remote = self.remote.map(|r| r.homed(home));
        self
    }

    fn local(&self) -> &Arc<Politeness> {
        self.local.get_or_init(|| Arc::new(Politeness::new(self.config.clone())))
    }

    fn remote_now(&self) -> Option<&PermitClient> {
        let remote = self.remote.as_ref()?;
        let again = self.remote_again_at.lock().unwrap_or_else(|p| p.into_inner());
        again.is_none_or(|at| Instant::now() >= at).then_some(remote)
    }

    fn refusal(&self, refusal: Refusal) -> Refusal {
        match refusal {
            Refusal::Robots(reason) if !self.opt_out.is_empty() => {
                Refusal::Robots(format!("{reason}; {}", self.opt_out))
            }
            other => other,
        }
    }

    /// Waits until a request to `url` may go. Err: robots.txt refuses it
    /// (the message says why and how to opt out), or the domain's circuit is
    /// open for every run (the message says until when).
    pub async fn acquire(&self, url: &Url) -> Result<Permit, Refusal> {
        if let Some(remote) = self.remote_now() {
            if let Some(p) = remote.leased(url) {
                return Ok(Permit::Remote(p));
            }
            match remote.acquire_leasing(url, self.obey_robots).await {
                Ok(Ok(p)) => return Ok(Permit::Remote(p)),
                Ok(Err(reason)) => return Err(self.refusal(reason)),
                Err(e) => {
                    *self.remote_again_at.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(Instant::now() + RECONNECT_AFTER);
                    if !self.warned.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            socket = %remote.path().display(),
                            error = %e,
                            "the politeness permit server cannot be reached; this run limits its requests on its own (other runs' requests to the same domains do not count against it)"
                        );
                    }
                }
            }
        }
        match self.local().acquire(url, self.obey_robots).await {
            Ok(p) => Ok(Permit::Local(p)),
            Err(reason) => Err(self.refusal(reason)),
        }
    }

    /// The generation the permit server's watch connection has read
    /// ([`PermitClient::watched_generation`]); None without a lease yet.
    pub fn watched_generation(&self) -> Option<watch::Receiver<u64>> {
        self.remote.as_ref()?.watched_generation()
    }

    /// Gives a permit back with how its request ended.
    pub async fn release(&self, permit: Permit, outcome: &Outcome) {
        match permit {
            Permit::Remote(p) => {
                if let Some(remote) = &self.remote {
                    remote.release(p, outcome).await;
                }
            }
            Permit::Local(p) => self.local().release(p, outcome),
        }
    }
}
