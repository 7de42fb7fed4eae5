//! The layers around every route, and the one layer ([`Edge`]) that does the
//! per-request work in a single pass: a request id (`x-request-id`, kept
//! when the client sent one, else a random UUID) on the request, its span
//! and its response; the audit row of a state-changing request
//! (`crate::audit`); dropping the kept `GET /apps` answers after a
//! state-changing request (`crate::reads`); and the security headers for a
//! JSON API (nosniff, no framing, no referrer, a CSP that allows nothing
//! unless the dashboard set its own, no caching). Inside it: CORS only for
//! the configured origins (`api.cors_origins`; none: no CORS headers, so
//! browsers refuse cross-origin calls), the early answer of a kept
//! `GET /apps` answer (`crate::reads::Early`) and the request-body limit
//! (`api.max_body_kb`, larger bodies 413).
//!
//! One hand-written layer instead of a stack of `from_fn` middlewares and
//! tower-http layers: axum clones a route's whole layer stack for every
//! request, and each `from_fn` boxes its service and its future, so the
//! stack cost more per request than the API's own work (see
//! `docs/benchmarks.md`, issue #11).

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::response::Response;
use dc_core::settings::ApiSettings;
use futures_util::future::Either;
use tower::{Layer, Service};
use tower_http::cors::{AllowOrigin, Cors, CorsLayer};
use tracing::Instrument as _;

use crate::{ApiState, audit, reads};

pub(crate) const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The security headers every response carries (the CSP only when the
/// handler set none: the dashboard's pages allow scripts, styles and
/// connections from this origin).
const SECURITY_HEADERS: [(HeaderName, HeaderValue); 4] = [
    (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
    (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
    (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
];
const CSP: HeaderValue = HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'");

/// `routes` with the layers applied: the [`Edge`] around every route, so
/// the audit row and every log record of the request carry its id.
pub fn apply(routes: Router, settings: &ApiSettings, state: ApiState) -> Router {
    let limit = usize::try_from(settings.max_body_kb.saturating_mul(1024)).unwrap_or(usize::MAX);
    let origins: Vec<HeaderValue> =
        settings.cors_origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    let cors = (!origins.is_empty()).then(|| {
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .expose_headers([REQUEST_ID])
    });
    routes.layer(Edge { state, cors, body_limit: DefaultBodyLimit::max(limit) })
}

/// The layer (see the module documentation). Inside it, in this order (each
/// applied by the edge rather than as a layer of its own: each layer on a
/// router wraps every route in one more boxed service): CORS for the
/// configured origins, the early answer of kept `GET /apps` answers
/// ([`reads::Early`]), the body limit, then the route.
#[derive(Clone)]
pub struct Edge {
    state: ApiState,
    cors: Option<CorsLayer>,
    body_limit: DefaultBodyLimit,
}

type Inner<S> = MaybeCors<reads::Early<<DefaultBodyLimit as Layer<S>>::Service>>;

impl<S> Layer<S> for Edge {
    type Service = EdgeService<Inner<S>>;

    fn layer(&self, inner: S) -> Self::Service {
        let kept = reads::Early::new(self.state.clone(), self.body_limit.layer(inner));
        let inner = match &self.cors {
            Some(cors) => MaybeCors::With(Box::new(cors.layer(kept))),
            None => MaybeCors::Without(kept),
        };
        EdgeService { state: self.state.clone(), inner }
    }
}

/// `S` behind CORS when origins are configured, else `S` alone (no CORS
/// headers at all, so browsers refuse cross-origin calls).
#[derive(Clone)]
pub enum MaybeCors<S> {
    /// Origins are configured (boxed: CORS's settings are large; a read
    /// does not clone them).
    With(Box<Cors<S>>),
    /// None are.
    Without(S),
}

impl<S> Service<Request> for MaybeCors<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<<Cors<S> as Service<Request>>::Future, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        match self {
            MaybeCors::With(s) => s.poll_ready(cx),
            MaybeCors::Without(s) => s.poll_ready(cx),
        }
    }

    fn call(&mut self, req: Request) -> Self::Future {
        match self {
            MaybeCors::With(s) => Either::Left(s.call(req)),
            MaybeCors::Without(s) => Either::Right(s.call(req)),
        }
    }
}

/// The service of [`Edge`] around one route.
#[derive(Clone)]
pub struct EdgeService<S> {
    state: ApiState,
    inner: S,
}

impl<S> Service<Request> for EdgeService<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let id = match req.headers().get(&REQUEST_ID) {
            Some(id) => id.clone(),
            None => {
                let id = new_request_id();
                req.headers_mut().insert(REQUEST_ID, id.clone());
                id
            }
        };
        let span = tracing::info_span!("api", method = %req.method(), path = %req.uri().path(),
            request_id = id.to_str().unwrap_or("-"));
        if audit::is_read(req.method()) {
            // a read: the service that was made ready answers it now
            let answer = self.inner.call(req);
            return Box::pin(
                async move {
                    let response = answer.await?;
                    Ok(with_headers(response, id))
                }
                .instrument(span),
            );
        }
        // the service that was made ready handles this request; its clone waits for the next
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let state = self.state.clone();
        Box::pin(
            async move {
                let (pending, req) = audit::start(req).await;
                let response = inner.call(req).await?;
                // before the answer leaves: a client that changed something reads its change
                state.reads().changed();
                if let Some(p) = pending {
                    p.record(state.db(), &response).await;
                }
                Ok(with_headers(response, id))
            }
            .instrument(span),
        )
    }
}

/// `response` with the security headers and the request id `id`.
fn with_headers(mut response: Response, id: HeaderValue) -> Response {
    let h = response.headers_mut();
    // room for what follows, so the map grows at most once
    h.reserve(SECURITY_HEADERS.len() + 2);
    for (name, value) in SECURITY_HEADERS {
        h.insert(name, value);
    }
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(header::CONTENT_SECURITY_POLICY, CSP);
    }
    if !h.contains_key(&REQUEST_ID) {
        h.insert(REQUEST_ID, id);
    }
    response
}

/// Random bytes of a thread, drawn from the OS in batches.
struct RandomPool {
    bytes: [u8; 4096],
    used: usize,
}

thread_local! {
    static POOL: RefCell<RandomPool> = const { RefCell::new(RandomPool { bytes: [0; 4096], used: 4096 }) };
}

/// A random (version 4) UUID for a request without an id: 16 bytes from a
/// per-thread pool the OS refills every 256 ids, instead of one system call
/// per request.
pub(crate) fn new_request_id() -> HeaderValue {
    let mut random = [0u8; 16];
    POOL.with_borrow_mut(|pool| {
        if pool.used + random.len() > pool.bytes.len() {
            // the OS's generator does not fail on Linux once booted; should
            // it, the pool's previous bytes are reused, which still gives
            // well-formed (if repeated) ids
            let _ = getrandom::fill(&mut pool.bytes);
            pool.used = 0;
        }
        let start = pool.used;
        pool.used += random.len();
        random.copy_from_slice(&pool.bytes[start..pool.used]);
    });
    let uuid = uuid::Builder::from_random_bytes(random).into_uuid();
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    HeaderValue::from_str(uuid.hyphenated().encode_lower(&mut text)).unwrap_or(HeaderValue::from_static("-"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_distinct_version_4_uuids() {
        let ids: std::collections::HashSet<String> =
            (0..1000).map(|_| new_request_id().to_str().expect("text").to_string()).collect();
        assert_eq!(ids.len(), 1000, "1000 distinct ids, across pool refills");
        for id in &ids {
            let u = uuid::Uuid::parse_str(id).expect("a UUID");
            assert_eq!(u.get_version(), Some(uuid::Version::Random), "{id}");
            assert_eq!(id.len(), 36);
        }
    }
}
