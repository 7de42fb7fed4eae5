//! The layers around every response: request-body limit (`api.max_body_kb`,
//! larger bodies 413), security headers for a JSON API (nosniff, no framing,
//! no referrer, a CSP that allows nothing unless the dashboard set its own,
//! no caching), CORS only for the configured origins (`api.cors_origins`;
//! none: no CORS headers, so browsers refuse cross-origin calls), and a request id (`x-request-id`, kept when
//! the client sent one) on every request's span and response.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method, Request, header};
use dc_core::settings::ApiSettings;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The security headers every response carries.
const SECURITY_HEADERS: &[(HeaderName, &str)] = &[
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::REFERRER_POLICY, "no-referrer"),
    (header::CONTENT_SECURITY_POLICY, "default-src 'none'; frame-ancestors 'none'"),
    (header::CACHE_CONTROL, "no-store"),
];

/// `routes` with the layers applied (the request id outermost, so every
/// other layer's log records carry it).
pub fn apply(routes: Router, settings: &ApiSettings) -> Router {
    let limit = usize::try_from(settings.max_body_kb.saturating_mul(1024)).unwrap_or(usize::MAX);
    let mut router = routes.layer(DefaultBodyLimit::max(limit));
    for (name, value) in SECURITY_HEADERS {
        // the dashboard's pages set their own CSP (scripts, styles and
        // connections from this origin only); every other response gets
        // the one that allows nothing
        let value = HeaderValue::from_static(value);
        router = router.layer(if name == header::CONTENT_SECURITY_POLICY {
            SetResponseHeaderLayer::if_not_present(name.clone(), value)
        } else {
            SetResponseHeaderLayer::overriding(name.clone(), value)
        });
    }
    let origins: Vec<HeaderValue> =
        settings.cors_origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect();
    if !origins.is_empty() {
        router = router.layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::list(origins))
                .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
                .expose_headers([REQUEST_ID]),
        );
    }
    router
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            let id = req.headers().get(&REQUEST_ID).and_then(|v| v.to_str().ok()).unwrap_or("-");
            tracing::info_span!("api", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}
