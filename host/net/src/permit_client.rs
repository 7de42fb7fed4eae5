//! The worker's side of the one-limiter-per-machine rule: [`PermitClient`]
//! speaks the permit server's protocol (`permit_server`) over pooled
//! connections, and [`HostLimiter`] is what a run's requests go through — the
//! server when it answers, else an in-process limiter of the run's own (with
//! a warning, once), asking the server again a few seconds later.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use reqwest::Url;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use crate::limiter::{LimitConfig, LocalPermit, Politeness, Refusal};
use crate::permit_server::{Answer, Request};
use crate::throttle::Outcome;

/// How long a worker limits on its own before asking the server again.
pub const RECONNECT_AFTER: Duration = Duration::from_secs(5);

struct Conn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    line: String,
}

impl Conn {
    async fn open(path: &Path) -> std::io::Result<Conn> {
        let (r, w) = UnixStream::connect(path).await?.into_split();
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

/// A permit the server granted; it holds its connection until released.
pub struct RemotePermit {
    conn: Conn,
    id: u64,
}

impl std::fmt::Debug for RemotePermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemotePermit").field("id", &self.id).finish()
    }
}

/// A client of the permit server at one socket path.
pub struct PermitClient {
    path: PathBuf,
    idle: Mutex<Vec<Conn>>,
}

impl std::fmt::Debug for PermitClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PermitClient").field("path", &self.path).finish_non_exhaustive()
    }
}

impl PermitClient {
    /// A client of the server at `path` (connections are made when needed).
    pub fn new(path: impl Into<PathBuf>) -> PermitClient {
        PermitClient { path: path.into(), idle: Mutex::default() }
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn idle(&self) -> Option<Conn> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    /// Waits for a permit to fetch `url`. Outer Err: the server cannot be
    /// reached; inner Err: why it refused (robots.txt, an open circuit).
    pub async fn acquire(&self, url: &Url, robots: bool) -> std::io::Result<Result<RemotePermit, Refusal>> {
        let req = Request::Acquire { url: url.to_string(), robots };
        // a pooled connection may have gone stale (the server was replaced): one fresh try
        let (mut conn, answer) = match self.idle() {
            Some(mut c) => match c.ask(&req).await {
                Ok(a) => (c, a),
                Err(_) => {
                    let mut c = Conn::open(&self.path).await?;
                    let a = c.ask(&req).await?;
                    (c, a)
                }
            },
            None => {
                let mut c = Conn::open(&self.path).await?;
                let a = c.ask(&req).await?;
                (c, a)
            }
        };
        match answer {
            Answer::Granted { permit } => Ok(Ok(RemotePermit { conn, id: permit })),
            Answer::Refused { reason } => {
                conn.line.clear();
                self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
                Ok(Err(Refusal::Robots(reason)))
            }
            Answer::Open { reason } => {
                conn.line.clear();
                self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
                Ok(Err(Refusal::CircuitOpen(reason)))
            }
            Answer::Invalid { error } => Err(std::io::Error::other(format!("the permit server refused: {error}"))),
        }
    }

    /// Gives a permit back (a connection that fails is dropped, and the
    /// server releases what it held).
    pub async fn release(&self, permit: RemotePermit, outcome: &Outcome) {
        let RemotePermit { mut conn, id } = permit;
        if conn.send(&Request::release(id, outcome)).await.is_ok() {
            self.idle.lock().unwrap_or_else(|p| p.into_inner()).push(conn);
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
            match remote.acquire(url, self.obey_robots).await {
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
