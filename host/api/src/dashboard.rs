//! The dashboard: a page at `/` (and `/apps/{app_id}`, `/runs/{runtime_id}`,
//! which the page's script routes itself) with its script, styles and the
//! vendored charting library (uPlot, `assets/vendor/`), all compiled into
//! the binary with `include_str!`, so building the host needs no Node
//! toolchain. These routes are public: they carry no data; the page logs in
//! with the password grant and calls the API with the token like any client.
//! Its responses carry a CSP that allows scripts, styles and connections
//! from this origin only (no inline script or style).

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::{ApiError, ApiState};

/// The policy of every dashboard response.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const INDEX: &str = include_str!("../assets/index.html");

/// The assets under `/assets/`: name, content type, content.
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", "text/javascript; charset=utf-8", include_str!("../assets/app.js")),
    ("app.css", "text/css; charset=utf-8", include_str!("../assets/app.css")),
    ("icon.svg", "image/svg+xml", include_str!("../assets/icon.svg")),
    ("uPlot.iife.min.js", "text/javascript; charset=utf-8", include_str!("../assets/vendor/uPlot.iife.min.js")),
    ("uPlot.min.css", "text/css; charset=utf-8", include_str!("../assets/vendor/uPlot.min.css")),
    ("uPlot.LICENSE", "text/plain; charset=utf-8", include_str!("../assets/vendor/uPlot.LICENSE")),
];

/// The dashboard's routes (public).
pub fn routes() -> axum::Router<ApiState> {
    axum::Router::new()
        .route("/", get(page))
        .route("/apps/{app_id}", get(page))
        .route("/runs/{runtime_id}", get(page))
        .route("/assets/{name}", get(asset))
}

fn with_csp(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
        ],
        body,
    )
        .into_response()
}

async fn page() -> Response {
    with_csp("text/html; charset=utf-8", INDEX)
}

async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    let (_, content_type, body) = ASSETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no dashboard asset {name:?}")))?;
    Ok(with_csp(content_type, body))
}
