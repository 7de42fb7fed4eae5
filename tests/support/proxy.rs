//! A small real forward proxy and a proxy judge on loopback, for the proxy
//! tests and the proxy benchmark.
//!
//! [`TestProxy`] speaks HTTP/1.1 proxying as real proxies do: absolute-form
//! requests (`GET http://host/path`) are forwarded with a `Via: 1.1 <name>`
//! header added, bodies streamed both ways over kept-alive upstream
//! connections, and `CONNECT host:port` opens a tunnel. It connects out
//! from the loopback address it is given (`127.0.0.2`, `127.0.0.3`, …), so a
//! judge sees a different caller address per proxy, as with real exits. It
//! records every request (with the user name and password of its
//! `Proxy-Authorization`), can require authentication (407 without it), and
//! can answer every request with one status itself (a banned exit).
//!
//! [`Judge`] answers every request with the caller's address, as proxy
//! judges do.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// What the proxy answers with: its own short answers, or the target's
/// answer streamed through.
type Body = BoxBody<Bytes, hyper::Error>;

/// How a [`TestProxy`] behaves.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Its name, in the `Via` header it adds.
    pub name: String,
    /// The local address it connects out from (a loopback address).
    pub bind_out: IpAddr,
    /// Answer 407 to requests without `Proxy-Authorization`.
    pub require_auth: bool,
    /// Answer every request with this status instead of forwarding it.
    pub answer_status: Option<u16>,
}

impl ProxyConfig {
    /// A plain proxy named `name` that connects out from `bind_out`.
    pub fn new(name: &str, bind_out: &str) -> ProxyConfig {
        ProxyConfig {
            name: name.into(),
            bind_out: bind_out.parse().expect("a loopback address"),
            require_auth: false,
            answer_status: None,
        }
    }
}

/// One request a [`TestProxy`] received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `GET`, `CONNECT`, ….
    pub method: String,
    /// The request target (`http://host/path`, or `host:port` for CONNECT).
    pub target: String,
    /// The user name of its `Proxy-Authorization`.
    pub user: Option<String>,
    /// The password of its `Proxy-Authorization`.
    pub password: Option<String>,
}

struct State {
    cfg: ProxyConfig,
    seen: Mutex<Vec<Seen>>,
    /// The upstream client (keep-alive connections from `cfg.bind_out`).
    client: Client<HttpConnector, Incoming>,
}

/// A forward proxy on a free loopback port, running until dropped.
pub struct TestProxy {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    state: Arc<State>,
    rt: Option<tokio::runtime::Runtime>,
}

fn basic_auth(req: &Request<Incoming>) -> (Option<String>, Option<String>) {
    let Some(v) = req.headers().get("proxy-authorization").and_then(|v| v.to_str().ok()) else { return (None, None) };
    let Some(b64) = v.strip_prefix("Basic ") else { return (None, None) };
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else { return (None, None) };
    let text = String::from_utf8_lossy(&raw).into_owned();
    match text.split_once(':') {
        Some((u, p)) => (Some(u.to_string()), Some(p.to_string())),
        None => (Some(text), None),
    }
}

fn plain(status: u16, text: &str) -> Response<Body> {
    let full = Full::new(Bytes::from(text.to_string())).map_err(|never| match never {}).boxed();
    let mut r = Response::new(full);
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r
}

async fn connect_from(bind: IpAddr, authority: &str) -> std::io::Result<tokio::net::TcpStream> {
    let addr = tokio::net::lookup_host(authority)
        .await?
        .find(|a| a.is_ipv4() == bind.is_ipv4())
        .ok_or_else(|| std::io::Error::other(format!("{authority} has no address")))?;
    let sock = if bind.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    sock.bind(SocketAddr::new(bind, 0))?;
    sock.connect(addr).await
}

async fn handle(req: Request<Incoming>, st: Arc<State>) -> Result<Response<Body>, Infallible> {
    let (user, password) = basic_auth(&req);
    let target = if req.method() == Method::CONNECT {
        req.uri().authority().map(|a| a.to_string()).unwrap_or_default()
    } else {
        req.uri().to_string()
    };
    st.seen.lock().unwrap_or_else(|p| p.into_inner()).push(Seen {
        method: req.method().to_string(),
        target: target.clone(),
        user: user.clone(),
        password,
    });
    if st.cfg.require_auth && user.is_none() {
        let mut r = plain(407, "proxy authentication required");
        r.headers_mut().insert("proxy-authenticate", hyper::header::HeaderValue::from_static("Basic realm=\"test\""));
        return Ok(r);
    }
    if let Some(status) = st.cfg.answer_status {
        return Ok(plain(status, "refused by the test proxy"));
    }
    if req.method() == Method::CONNECT {
        let bind = st.cfg.bind_out;
        tokio::spawn(async move {
            let Ok(upgraded) = hyper::upgrade::on(req).await else { return };
            let Ok(mut upstream) = connect_from(bind, &target).await else { return };
            let mut client = TokioIo::new(upgraded);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        });
        return Ok(plain(200, ""));
    }
    // forwarded as it comes: the request's and the answer's bodies are
    // streamed, the upstream connection kept alive (a real proxy's cost)
    let (mut parts, body) = req.into_parts();
    for h in ["proxy-authorization", "proxy-connection", "connection", "keep-alive", "te", "upgrade"] {
        parts.headers.remove(h);
    }
    let via = format!("1.1 {}", st.cfg.name);
    let via = hyper::header::HeaderValue::from_str(&via)
        .unwrap_or_else(|_| hyper::header::HeaderValue::from_static("1.1 proxy"));
    parts.headers.append("via", via.clone());
    let resp = match st.client.request(Request::from_parts(parts, body)).await {
        Ok(r) => r,
        Err(e) => return Ok(plain(502, &format!("test proxy: upstream failed: {e}"))),
    };
    let (mut parts, body) = resp.into_parts();
    for h in ["connection", "keep-alive", "transfer-encoding"] {
        parts.headers.remove(h);
    }
    parts.headers.append("via", via);
    Ok(Response::from_parts(parts, body.boxed()))
}

/// Serves `listener` with `handler` (HTTP/1.1 with upgrades) until the runtime ends.
fn serve<F, Fut>(rt: &tokio::runtime::Runtime, listener: std::net::TcpListener, handler: F)
where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    listener.set_nonblocking(true).expect("nonblocking listener");
    rt.spawn(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
        loop {
            let Ok((stream, peer)) = listener.accept().await else { continue };
            // an answer streamed in pieces must not wait for the ACK of the
            // last one (Nagle), as in any proxy that forwards
            let _ = stream.set_nodelay(true);
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handler.clone()(req, peer));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("proxy runtime")
}

impl TestProxy {
    /// Starts a proxy on a free loopback port.
    pub fn start(cfg: ProxyConfig) -> TestProxy {
        TestProxy::start_on(cfg, 0)
    }

    /// Starts a proxy on loopback port `port` (0: a free one).
    pub fn start_on(cfg: ProxyConfig, port: u16) -> TestProxy {
        let rt = runtime();
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind a loopback port");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let mut connector = HttpConnector::new();
        connector.set_local_address(Some(cfg.bind_out));
        connector.set_nodelay(true);
        let client = {
            // the client's connection tasks run on the proxy's runtime
            let _in = rt.enter();
            Client::builder(TokioExecutor::new()).build(connector)
        };
        let state = Arc::new(State { cfg, seen: Mutex::new(Vec::new()), client });
        let st = state.clone();
        serve(&rt, listener, move |req, _peer| handle(req, st.clone()));
        TestProxy { url, state, rt: Some(rt) }
    }

    /// Every request it received, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Requests it received for targets containing `needle`.
    pub fn count_for(&self, needle: &str) -> usize {
        self.seen().iter().filter(|s| s.target.contains(needle)).count()
    }
}

/// A proxy judge on loopback: answers every request with the caller's IP.
pub struct Judge {
    /// `http://127.0.0.1:PORT/ip`.
    pub url: String,
    asked: Arc<Mutex<Vec<IpAddr>>>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Judge {
    /// Starts a judge on a free loopback port.
    pub fn start() -> Judge {
        let rt = runtime();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let url = format!("http://{}/ip", listener.local_addr().expect("address"));
        let asked = Arc::new(Mutex::new(Vec::new()));
        let log = asked.clone();
        serve(&rt, listener, move |_req, peer: SocketAddr| {
            let log = log.clone();
            async move {
                log.lock().unwrap_or_else(|p| p.into_inner()).push(peer.ip());
                Ok::<_, Infallible>(plain(200, &format!("{}\n", peer.ip())))
            }
        });
        Judge { url, asked, rt: Some(rt) }
    }

    /// The addresses it was asked from, in order.
    pub fn asked(&self) -> Vec<IpAddr> {
        self.asked.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The URL of a judge that is down (nothing listens on its port).
    pub fn down_url() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let url = format!("http://{}/ip", l.local_addr().expect("address"));
        drop(l);
        url
    }
}

// dropped in a test's async context too: never block there
impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Judge {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}
