//! dc-api: the REST API under `/api/v1` (axum). Every route but health,
//! readiness and the OpenAPI document sits in a role group (viewer, operator,
//! admin) whose guard authenticates the bearer token through the
//! [`Authenticate`] seam and checks the caller's role before the handler runs.
//! Handlers only translate HTTP to the library functions the CLI uses
//! (`dc-core`, `dc-runtime`) and their typed errors to statuses; the OpenAPI
//! 3.1 document is generated from the same route declarations (utoipa), so
//! a routed path cannot be missing from it.
//!
//! `dc-host serve` binds the listener and calls [`serve`] with its shutdown
//! signal.

mod access;
mod audit;
mod auth_doc;
mod dashboard;
mod document;
mod error;
mod extract;
mod hardening;
mod limit;
pub mod metrics;
mod page;
mod reads;
mod routes;
mod stream;

use std::future::Future;
use std::sync::Arc;

use dc_core::access::{Authenticate, Role};
use dc_runtime::HostEnv;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, Http, HttpAuthScheme, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use page::{DEFAULT_LIMIT, MAX_LIMIT};

/// What the handlers share: the host environment (database, settings) and
/// the token authority.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    env: HostEnv,
    auth: Arc<dyn Authenticate>,
    /// Wakes the serve loop this API runs in, so a queued command is claimed
    /// at once rather than at the next tick.
    wake: Option<Arc<tokio::sync::Notify>>,
    /// What `/metrics` serves (none: it answers 404).
    metrics: Option<metrics::Metrics>,
    /// The event streams' hubs and tickets.
    streams: Arc<stream::Streams>,
    /// The per-client rate limit (`api.requests_per_second_per_client`).
    limiter: Arc<dyn limit::ClientLimiter>,
    /// Kept answers of `GET /apps` (`api.apps_cache_ms`).
    reads: Arc<reads::ReadCache>,
}

impl std::fmt::Debug for ApiState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiState").field("env", &self.inner.env).finish_non_exhaustive()
    }
}

impl ApiState {
    /// The state of an API over `env` whose bearer tokens `auth` verifies.
    pub fn new(env: HostEnv, auth: Arc<dyn Authenticate>) -> ApiState {
        let limiter = Arc::from(limit::new(&env.settings.api));
        let reads =
            Arc::new(reads::ReadCache::new(env.settings.api.apps_cache_ms, Arc::new(dc_scheduler::SystemClock)));
        ApiState {
            inner: Arc::new(Inner { env, auth, wake: None, metrics: None, streams: Arc::default(), limiter, reads }),
        }
    }

    /// The same state, its kept `GET /apps` answers timed by `clock` (tests
    /// advance a `dc_scheduler::ManualClock`).
    pub fn with_apps_cache_clock(self, clock: Arc<dyn dc_scheduler::Clock>) -> ApiState {
        let mut inner = Arc::unwrap_or_clone(self.inner);
        inner.reads = Arc::new(reads::ReadCache::new(inner.env.settings.api.apps_cache_ms, clock));
        ApiState { inner: Arc::new(inner) }
    }

    pub(crate) fn reads(&self) -> &reads::ReadCache {
        &self.inner.reads
    }

    /// The same state, its per-client rate limit timed by `clock` (tests
    /// advance a `governor::clock::FakeRelativeClock` instead of sleeping).
    pub fn with_rate_limit_clock<C>(self, clock: C) -> ApiState
    where
        C: governor::clock::Clock + Clone + Send + Sync + 'static,
        C::Instant: governor::clock::Reference + Send + Sync,
    {
        let mut inner = Arc::unwrap_or_clone(self.inner);
        inner.limiter = Arc::from(limit::with_clock(&inner.env.settings.api, clock));
        ApiState { inner: Arc::new(inner) }
    }

    pub(crate) fn limiter(&self) -> &dyn limit::ClientLimiter {
        self.inner.limiter.as_ref()
    }

    /// The same state, waking `wake` after queuing a command (the serve loop
    /// the API runs in waits on it).
    pub fn with_wake(self, wake: Arc<tokio::sync::Notify>) -> ApiState {
        let mut inner = Arc::unwrap_or_clone(self.inner);
        inner.wake = Some(wake);
        ApiState { inner: Arc::new(inner) }
    }

    /// The same state, serving `metrics` at `/metrics` (viewer role).
    pub fn with_metrics(self, metrics: metrics::Metrics) -> ApiState {
        let mut inner = Arc::unwrap_or_clone(self.inner);
        inner.metrics = Some(metrics);
        ApiState { inner: Arc::new(inner) }
    }

    pub(crate) fn metrics(&self) -> Option<&metrics::Metrics> {
        self.inner.metrics.as_ref()
    }

    pub(crate) fn streams(&self) -> &Arc<stream::Streams> {
        &self.inner.streams
    }

    /// Event-stream hubs running now: one per watched run or app, however
    /// many clients watch it.
    pub fn stream_hubs(&self) -> usize {
        self.inner.streams.hub_count()
    }

    /// Tells the serve loop that a command is waiting.
    pub(crate) fn command_queued(&self) {
        if let Some(w) = &self.inner.wake {
            w.notify_one();
        }
    }

    /// The host environment.
    pub fn env(&self) -> &HostEnv {
        &self.inner.env
    }

    /// The database.
    pub fn db(&self) -> &dc_core::Database {
        &self.inner.env.db
    }

    fn auth(&self) -> &dyn Authenticate {
        self.inner.auth.as_ref()
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "dc-host API",
        description = "Control plane of dc-host. Every route except health, readiness and this document needs \
                       `Authorization: Bearer TOKEN`; each operation's description names the least role it needs \
                       (viewer < operator < admin). Errors are `{\"error\": {\"code\", \"message\"}}`."
    ),
    modifiers(&BearerScheme),
    // enums used only by query parameters: utoipa refers to them by `$ref`
    // but collects only body and response schemas by itself
    components(schemas(routes::apps::AppSortParam, routes::runs::RunStatusParam, routes::logs::LevelParam)),
    tags(
        (name = "health", description = "Liveness and readiness"),
        (name = "apps", description = "Apps: state, schedule, arguments, commands"),
        (name = "runs", description = "Runs: history, details, stop"),
        (name = "logs", description = "Log records"),
        (name = "hosts", description = "Hosts serving the database"),
        (name = "plugins", description = "Registered plugin versions"),
        (name = "audit", description = "The audit log of state-changing requests"),
        (name = "streams", description = "Live events (Server-Sent Events), stream tickets, the caller"),
    )
)]
struct ApiDoc;

struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
        // event streams only: a one-use ticket from POST /stream-tickets (EventSource sends no headers)
        components.add_security_scheme("ticket", SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::new("ticket"))));
    }
}

/// The routes with their OpenAPI description, each in its role group.
fn api_routes(state: &ApiState) -> OpenApiRouter<ApiState> {
    let public = OpenApiRouter::new().routes(routes!(routes::health::health)).routes(routes!(routes::health::ready));
    let viewer = OpenApiRouter::new()
        .routes(routes!(routes::apps::list))
        .routes(routes!(routes::apps::get))
        .routes(routes!(routes::runs::list))
        .routes(routes!(routes::runs::get))
        .routes(routes!(routes::logs::list))
        .routes(routes!(routes::hosts::list))
        .routes(routes!(routes::plugins::list))
        .routes(routes!(routes::plugins::versions))
        .routes(routes!(routes::events::me))
        .routes(routes!(routes::events::ticket));
    let streams =
        OpenApiRouter::new().routes(routes!(routes::events::run_events)).routes(routes!(routes::events::app_events));
    let operator = OpenApiRouter::new()
        .routes(routes!(routes::apps::update))
        .routes(routes!(routes::apps::command))
        .routes(routes!(routes::runs::stop));
    // a plugin upload may be larger than other bodies (api.max_upload_mb)
    let upload_limit = usize::try_from(state.env().settings.max_upload_bytes()).unwrap_or(usize::MAX);
    let upload = OpenApiRouter::new()
        .routes(routes!(routes::plugins::upload))
        .layer(axum::extract::DefaultBodyLimit::max(upload_limit));
    let admin = OpenApiRouter::new()
        .routes(routes!(routes::plugins::rollback))
        .merge(upload)
        .routes(routes!(routes::audit::list))
        .routes(routes!(routes::apps::delete));
    public
        .merge(access::guarded(viewer, state, Role::Viewer))
        .merge(access::guarded_stream(streams, state, Role::Viewer))
        .merge(access::guarded(operator, state, Role::Operator))
        .merge(access::guarded(admin, state, Role::Admin))
}

/// The OpenAPI 3.1 document of the API as [`router`] serves it at
/// `/api/v1/openapi.json`.
pub fn openapi(state: &ApiState) -> serde_json::Value {
    document::served(&OpenApiRouter::with_openapi(ApiDoc::openapi()).merge(api_routes(state)).split_for_parts().1)
}

/// The API as an axum router: `/api/v1/…` with the role guards, the audit
/// log of state-changing requests, the JSON error shape for unknown routes,
/// body-size limit, security headers, CORS
/// for the configured origins and a request id on every request and its log
/// records.
pub fn router(state: ApiState) -> axum::Router {
    build(state, None)
}

/// [`router`] with the token authority's routes (`dc_auth::router`: `POST
/// /token`, `POST /revoke`) mounted at `/api/v1/auth`, behind the same
/// body-size limit, security headers and CORS, and in the OpenAPI document.
pub fn router_with_auth(state: ApiState, auth_routes: axum::Router) -> axum::Router {
    build(state, Some(auth_routes))
}

fn build(state: ApiState, auth_routes: Option<axum::Router>) -> axum::Router {
    let (routes, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi()).merge(api_routes(&state)).split_for_parts();
    if auth_routes.is_some() {
        doc.merge(auth_doc::doc());
    }
    // serialized once: each request gets the same bytes
    let doc = axum::body::Bytes::from(document::served(&doc).to_string());
    let settings = state.env().settings.api.clone();
    let edge_state = state.clone();
    let mut routes = routes
        .route(
            "/api/v1/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], doc) }
            }),
        )
        .merge(access::guarded_axum(
            axum::Router::new().route("/metrics", axum::routing::get(metrics::scrape)),
            &state,
            Role::Viewer,
        ))
        .merge(dashboard::routes())
        .fallback(routes::health::no_route)
        .method_not_allowed_fallback(routes::health::no_method)
        .with_state(state);
    if let Some(auth) = auth_routes {
        routes = routes.nest("/api/v1/auth", auth);
    }
    // after the nesting, so the token endpoint is audited too
    hardening::apply(routes, &settings, edge_state)
}

/// Serves the API on `listener` until `shutdown` completes, then finishes the
/// requests in flight (graceful shutdown).
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_router(listener, router(state), shutdown).await
}

/// Serves `router` (from [`router`] or [`router_with_auth`]) on `listener`
/// until `shutdown` completes, with each connection's peer address available
/// to the handlers (the token endpoint's per-address rate limit needs it).
pub async fn serve_router(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "REST API listening");
    }
    // open event streams end at shutdown, so the graceful shutdown does not wait for them
    let (closing_tx, closing) = tokio::sync::watch::channel(false);
    let router = router.layer(axum::Extension(routes::events::Closing(closing)));
    let shutdown = async move {
        shutdown.await;
        let _ = closing_tx.send(true);
    };
    axum::serve(no_delay(listener), router.into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(shutdown)
        .await
}

/// `listener` with `TCP_NODELAY` on every accepted connection: an event
/// stream writes one small frame per event, and with Nagle's algorithm on a
/// frame would wait for the client's (delayed) ACK of the one before.
fn no_delay(
    listener: tokio::net::TcpListener,
) -> axum::serve::TapIo<tokio::net::TcpListener, fn(&mut tokio::net::TcpStream)> {
    use axum::serve::ListenerExt as _;
    fn set(tcp: &mut tokio::net::TcpStream) {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY could not be set on an API connection");
        }
    }
    listener.tap_io(set as fn(&mut tokio::net::TcpStream))
}

#[cfg(test)]
mod tests {
    use axum::serve::Listener as _;

    #[tokio::test]
    async fn api_connections_have_nagle_off() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let mut listener = super::no_delay(listener);
        let client = tokio::spawn(tokio::net::TcpStream::connect(addr));
        let (accepted, peer) = listener.accept().await;
        let client = client.await.expect("join").expect("connect");
        assert_eq!(peer, client.local_addr().expect("client address"));
        assert!(accepted.nodelay().expect("read TCP_NODELAY"), "an accepted API connection has Nagle's algorithm on");
    }
}
