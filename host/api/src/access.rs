//! The role guard every non-public route group sits behind: it reads the
//! bearer token, asks the token authority ([`dc_core::access::Authenticate`])
//! who it stands for, and lets the request through only when that
//! principal's role allows the group's role. Missing or refused tokens answer
//! 401 with `WWW-Authenticate: Bearer`, too small a role 403. The principal
//! is put into the request's extensions for the handler, and into the
//! response's as an [`Actor`] for the audit layer. An accepted token's
//! subject is counted against its rate limit (`crate::limit`) first: over
//! it, 429 `rate_limited` with `Retry-After`.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dc_core::access::{Actor, Principal, Role};
use utoipa_axum::router::OpenApiRouter;

use crate::{ApiError, ApiState, limit};

/// `router` with every route behind the guard for `role`.
pub fn guarded(router: OpenApiRouter<ApiState>, state: &ApiState, role: Role) -> OpenApiRouter<ApiState> {
    router.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        move |state: State<ApiState>, req: Request, next: Next| authorize(state, role, req, next),
    ))
}

/// A plain axum `router` (a route outside the OpenAPI document, such as
/// `/metrics`) behind the guard for `role`.
pub fn guarded_axum(router: axum::Router<ApiState>, state: &ApiState, role: Role) -> axum::Router<ApiState> {
    router.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        move |state: State<ApiState>, req: Request, next: Next| authorize(state, role, req, next),
    ))
}

/// An event-stream `router` behind the guard for `role`, which also accepts a
/// stream ticket (`?ticket=`, see `crate::stream`) when no `Authorization`
/// header is sent: browsers' `EventSource` cannot send one.
pub fn guarded_stream(router: OpenApiRouter<ApiState>, state: &ApiState, role: Role) -> OpenApiRouter<ApiState> {
    router.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        move |state: State<ApiState>, req: Request, next: Next| async move {
            #[derive(serde::Deserialize)]
            struct TicketParam {
                ticket: Option<String>,
            }
            if req.headers().contains_key(header::AUTHORIZATION) {
                return authorize(state, role, req, next).await;
            }
            let ticket = axum::extract::Query::<TicketParam>::try_from_uri(req.uri()).ok().and_then(|q| q.0.ticket);
            let Some(ticket) = ticket else {
                return Err(ApiError::unauthorized(
                    "this needs a bearer token (Authorization: Bearer TOKEN) or a stream ticket \
                     (?ticket= from POST /api/v1/stream-tickets)",
                    false,
                ));
            };
            let principal = state.streams().redeem_ticket(&ticket).ok_or_else(|| {
                ApiError::unauthorized("the stream ticket is unknown, used or expired; get a new one", true)
            })?;
            admit(&state.0, principal, role, req, next).await
        },
    ))
}

/// The token of an `Authorization: Bearer TOKEN` header.
fn bearer(req: &Request) -> Result<&str, ApiError> {
    let missing = || ApiError::unauthorized("this needs a bearer token: send Authorization: Bearer TOKEN", false);
    let value = req.headers().get(header::AUTHORIZATION).ok_or_else(missing)?;
    let text = value.to_str().map_err(|_| ApiError::unauthorized("the Authorization header is not text", true))?;
    match text.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => Ok(token.trim()),
        _ => Err(ApiError::unauthorized("the Authorization header must be \"Bearer TOKEN\"", true)),
    }
}

async fn authorize(State(state): State<ApiState>, role: Role, req: Request, next: Next) -> Result<Response, ApiError> {
    let principal: Principal = {
        let token = bearer(&req)?;
        state
            .auth()
            .authenticate(token)
            .await
            .map_err(|f| ApiError::unauthorized(format!("the bearer token was not accepted: {f}"), true))?
    };
    admit(&state, principal, role, req, next).await
}

/// Lets `principal` through when its rate limit and its role allow.
/// The answer carries the principal as an [`Actor`] for the audit log.
async fn admit(
    state: &ApiState,
    principal: Principal,
    role: Role,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let actor = Actor::from(&principal);
    let mut response = if let Err(wait) = state.limiter().check(&principal.subject) {
        let secs = limit::retry_after_secs(wait);
        tracing::info!(subject = %principal.subject, retry_after_secs = secs, "per-client rate limit reached");
        let mut r = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "too many requests from {}: retry after {secs} s (the limit is api.requests_per_second_per_client)",
                principal.subject
            ),
        )
        .into_response();
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        r
    } else if principal.role.allows(role) {
        tracing::debug!(subject = %principal.subject, role = %principal.role, "authorized");
        req.extensions_mut().insert(principal);
        next.run(req).await
    } else {
        ApiError::forbidden(format!("this needs the {role} role; {} has {}", principal.subject, principal.role))
            .into_response()
    };
    response.extensions_mut().insert(actor);
    Ok(response)
}
