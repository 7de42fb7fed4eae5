//! The role guard every non-public route group sits behind: it reads the
//! bearer token, asks the token authority ([`dc_core::access::Authenticate`])
//! who it stands for, and lets the request through only when that
//! principal's role allows the group's role. Missing or refused tokens answer
//! 401 with `WWW-Authenticate: Bearer`, too small a role 403. The principal
//! is put into the request's extensions for the handler, and (for a
//! state-changing request, the only ones audited) into the response's as an
//! [`Actor`] for the audit layer. An accepted token's
//! subject is counted against its rate limit (`crate::limit`) first: over
//! it, 429 `rate_limited` with `Retry-After`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dc_core::access::{Actor, Principal, Role};
use tower::{Layer, Service};
use utoipa_axum::router::OpenApiRouter;

use crate::{ApiError, ApiState, audit, limit};

/// `router` with every route behind the guard for `role`.
pub fn guarded(router: OpenApiRouter<ApiState>, state: &ApiState, role: Role) -> OpenApiRouter<ApiState> {
    router.route_layer(Guard { state: state.clone(), role, tickets: false })
}

/// A plain axum `router` (a route outside the OpenAPI document, such as
/// `/metrics`) behind the guard for `role`.
pub fn guarded_axum(router: axum::Router<ApiState>, state: &ApiState, role: Role) -> axum::Router<ApiState> {
    router.route_layer(Guard { state: state.clone(), role, tickets: false })
}

/// An event-stream `router` behind the guard for `role`, which also accepts a
/// stream ticket (`?ticket=`, see `crate::stream`) when no `Authorization`
/// header is sent: browsers' `EventSource` cannot send one.
pub fn guarded_stream(router: OpenApiRouter<ApiState>, state: &ApiState, role: Role) -> OpenApiRouter<ApiState> {
    router.route_layer(Guard { state: state.clone(), role, tickets: true })
}

/// The guard: a hand-written layer (one boxed future per request; axum's
/// `from_fn` would box its inner service too, for every request).
#[derive(Clone)]
pub struct Guard {
    state: ApiState,
    role: Role,
    /// Whether a stream ticket may stand in for the bearer token.
    tickets: bool,
}

impl<S> Layer<S> for Guard {
    type Service = GuardService<S>;

    fn layer(&self, inner: S) -> GuardService<S> {
        GuardService { guard: self.clone(), inner }
    }
}

/// The service of [`Guard`] around one route.
#[derive(Clone)]
pub struct GuardService<S> {
    guard: Guard,
    inner: S,
}

impl<S> Service<Request> for GuardService<S>
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
        // the service that was made ready handles this request; its clone waits for the next
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Guard { state, role, tickets } = self.guard.clone();
        // the header, not the request, is held while the token is checked (a
        // request is not `Sync`, so a future borrowing it would not be `Send`)
        let authorization = req.headers().get(header::AUTHORIZATION).cloned();
        let ticket = match (tickets, &authorization) {
            (true, None) => Some(ticket(&state, &req)),
            _ => None,
        };
        // the audit log reads the actor of state-changing requests only
        let audited = !audit::is_read(req.method());
        Box::pin(async move {
            let principal = match ticket {
                Some(p) => p,
                None => authenticate(&state, authorization.as_ref()).await,
            };
            let principal = match principal {
                Ok(p) => p,
                Err(e) => return Ok(e.into_response()),
            };
            let actor = audited.then(|| Actor::from(&principal));
            let mut response = match refusal(&state, &principal, role) {
                None => {
                    req.extensions_mut().insert(principal);
                    inner.call(req).await?
                }
                Some(refused) => refused,
            };
            if let Some(actor) = actor {
                response.extensions_mut().insert(actor);
            }
            Ok(response)
        })
    }
}

/// What the guard for `role` decides about a request whose `Authorization`
/// header is `authorization`, for a request answered without its route
/// (`crate::reads::Early`): none when the token is accepted, its rate limit
/// not reached and its role allows `role`, else the answer (401, 429, 403),
/// exactly as the guard gives it.
pub(crate) async fn check(state: &ApiState, authorization: Option<&HeaderValue>, role: Role) -> Option<Response> {
    match authenticate(state, authorization).await {
        Ok(principal) => refusal(state, &principal, role),
        Err(e) => Some(e.into_response()),
    }
}

/// The principal of the request's stream ticket (`?ticket=`).
fn ticket(state: &ApiState, req: &Request) -> Result<Principal, ApiError> {
    #[derive(serde::Deserialize)]
    struct TicketParam {
        ticket: Option<String>,
    }
    let ticket = axum::extract::Query::<TicketParam>::try_from_uri(req.uri()).ok().and_then(|q| q.0.ticket);
    let Some(ticket) = ticket else {
        return Err(ApiError::unauthorized(
            "this needs a bearer token (Authorization: Bearer TOKEN) or a stream ticket \
             (?ticket= from POST /api/v1/stream-tickets)",
            false,
        ));
    };
    state
        .streams()
        .redeem_ticket(&ticket)
        .ok_or_else(|| ApiError::unauthorized("the stream ticket is unknown, used or expired; get a new one", true))
}

/// The principal of the bearer token in `authorization` (the header's value).
async fn authenticate(state: &ApiState, authorization: Option<&HeaderValue>) -> Result<Principal, ApiError> {
    let token = bearer(authorization)?;
    state
        .auth()
        .authenticate(token)
        .await
        .map_err(|f| ApiError::unauthorized(format!("the bearer token was not accepted: {f}"), true))
}

/// The token of an `Authorization: Bearer TOKEN` header.
fn bearer(value: Option<&HeaderValue>) -> Result<&str, ApiError> {
    let missing = || ApiError::unauthorized("this needs a bearer token: send Authorization: Bearer TOKEN", false);
    let value = value.ok_or_else(missing)?;
    let text = value.to_str().map_err(|_| ApiError::unauthorized("the Authorization header is not text", true))?;
    match text.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => Ok(token.trim()),
        _ => Err(ApiError::unauthorized("the Authorization header must be \"Bearer TOKEN\"", true)),
    }
}

/// Why `principal` may not go on: 429 with `Retry-After` over its rate
/// limit, 403 for too small a role; none when both allow.
fn refusal(state: &ApiState, principal: &Principal, role: Role) -> Option<Response> {
    if let Err(wait) = state.limiter().check(&principal.subject) {
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
        Some(r)
    } else if principal.role.allows(role) {
        tracing::debug!(subject = %principal.subject, role = %principal.role, "authorized");
        None
    } else {
        Some(
            ApiError::forbidden(format!("this needs the {role} role; {} has {}", principal.subject, principal.role))
                .into_response(),
        )
    }
}
