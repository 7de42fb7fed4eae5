//! The HTTP face of the token authority, an axum router the REST API mounts
//! at `/api/v1/auth`:
//!
//! - `POST /token` (RFC 6749): an `application/x-www-form-urlencoded` body
//!   with `grant_type` `password` (`username`, `password`),
//!   `client_credentials` (`client_id` and `client_secret` in HTTP Basic or in
//!   the form, not both) or `refresh_token` (`refresh_token`). Answers
//!   §5.1 JSON (`access_token`, `token_type`, `expires_in`, `refresh_token`)
//!   or a §5.2 error (`error`, `error_description`): 400, or 401 for
//!   `invalid_client`.
//! - `POST /revoke` (RFC 7009): `token` (and an optional `token_type_hint`);
//!   a refresh token revokes its family; 200 also for an unknown token.
//!
//! A token answer carries the [`Actor`] (the claimed user name or client id,
//! or the subject a presented refresh token was issued to — refused tokens
//! included, when the token is known — with the role when the grant
//! succeeded) in its extensions, for the REST API's audit log. Every answer carries `Cache-Control: no-store`. Each client address may
//! make `auth.token_rate_burst` requests at once and
//! `auth.token_rate_per_minute` per minute (`governor`); more are answered
//! 429 with `Retry-After`. The address is the peer of the TCP connection
//! (serve with `into_make_service_with_connect_info::<SocketAddr>()`);
//! without it, all requests share one budget. 5xx bodies never carry
//! internal detail (it goes to the log).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, Form, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use dc_core::ErrorKind;
use dc_core::access::Actor;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};

use crate::authority::{Authority, GrantError, TokenResponse};

/// Tracked client addresses above which idle ones are forgotten.
const LIMITER_MAX_KEYS: usize = 10_000;

#[derive(Clone)]
struct AppState {
    auth: Arc<Authority>,
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
}

/// The token endpoint's router: `POST /token` and `POST /revoke`.
pub fn router(auth: Arc<Authority>) -> Router {
    let cfg = auth.settings();
    let one = NonZeroU32::MIN;
    let quota = Quota::per_minute(NonZeroU32::new(cfg.token_rate_per_minute).unwrap_or(one))
        .allow_burst(NonZeroU32::new(cfg.token_rate_burst).unwrap_or(one));
    let state = AppState { auth, limiter: Arc::new(RateLimiter::keyed(quota)) };
    Router::new()
        .route("/token", post(token))
        .route("/revoke", post(revoke))
        .layer(axum::middleware::from_fn_with_state(state.clone(), rate_limit))
        .with_state(state)
}

/// The body of a §5.2 error.
#[derive(Debug, Serialize)]
struct ErrorBody {
    error: &'static str,
    error_description: String,
}

fn no_store(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

fn error_response(e: GrantError) -> Response {
    let (status, code, description) = match e {
        GrantError::InvalidRequest(d) => (StatusCode::BAD_REQUEST, "invalid_request", d),
        GrantError::InvalidClient(d) => (StatusCode::UNAUTHORIZED, "invalid_client", d),
        GrantError::InvalidGrant(d) => (StatusCode::BAD_REQUEST, "invalid_grant", d),
        GrantError::UnsupportedGrantType(d) => (StatusCode::BAD_REQUEST, "unsupported_grant_type", d),
        GrantError::UnsupportedTokenType(d) => (StatusCode::BAD_REQUEST, "unsupported_token_type", d),
        GrantError::Server(e) => {
            tracing::error!(error = %e, "the token endpoint failed");
            if e.kind() == ErrorKind::Unavailable {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "the token service is unavailable: try again later".to_string(),
                )
            } else {
                (StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal error".to_string())
            }
        }
    };
    let mut r = (status, Json(ErrorBody { error: code, error_description: description })).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"dc-host\""));
    }
    no_store(r)
}

fn form_error(e: &FormRejection) -> GrantError {
    GrantError::InvalidRequest(format!(
        "the body must be an application/x-www-form-urlencoded form naming each parameter once ({})",
        e.body_text()
    ))
}

/// The parameters of `POST /token` (unknown ones are ignored, as RFC 6749
/// requires; a repeated one is refused).
#[derive(Debug, Deserialize)]
struct TokenForm {
    grant_type: Option<String>,
    username: Option<String>,
    password: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
}

fn required<'a>(value: &'a Option<String>, name: &str, grant: &str) -> Result<&'a str, GrantError> {
    value
        .as_deref()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| GrantError::InvalidRequest(format!("the {grant} grant needs the parameter {name}")))
}

/// Client credentials from `Authorization: Basic` (RFC 6749 §2.3.1: id and
/// secret form-urlencoded, then base64).
fn basic_credentials(headers: &HeaderMap) -> Result<Option<(String, String)>, GrantError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else { return Ok(None) };
    let bad = || GrantError::InvalidClient("the Authorization header is not valid HTTP Basic credentials".into());
    let text = value.to_str().map_err(|_| bad())?;
    let (scheme, encoded) = text.split_once(' ').ok_or_else(bad)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(GrantError::InvalidClient(
            "client authentication must use HTTP Basic (or client_id and client_secret in the form)".into(),
        ));
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(bad)?;
    let unescape =
        |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8().map(|c| c.into_owned());
    Ok(Some((unescape(id).map_err(|_| bad())?, unescape(secret).map_err(|_| bad())?)))
}

/// Runs the grant `form` asks for; a refresh grant sets `refresh_subject` to
/// the subject of the presented token when it is known.
async fn grant(
    auth: &Authority,
    headers: &HeaderMap,
    form: TokenForm,
    refresh_subject: &mut Option<String>,
) -> Result<TokenResponse, GrantError> {
    let basic = basic_credentials(headers)?;
    match form.grant_type.as_deref() {
        None | Some("") => Err(GrantError::InvalidRequest(
            "grant_type is missing: use password, client_credentials or refresh_token".into(),
        )),
        Some("password") => {
            let username = required(&form.username, "username", "password")?;
            let password = required(&form.password, "password", "password")?;
            auth.password_grant(username, password).await
        }
        Some("client_credentials") => {
            let in_form = form.client_id.is_some() || form.client_secret.is_some();
            let (id, secret) = match basic {
                Some(_) if in_form => {
                    return Err(GrantError::InvalidRequest(
                        "give the client credentials once: in the Authorization header or in the form, not both".into(),
                    ));
                }
                Some(creds) => creds,
                None => (
                    required(&form.client_id, "client_id", "client_credentials")?.to_string(),
                    required(&form.client_secret, "client_secret", "client_credentials")?.to_string(),
                ),
            };
            auth.client_credentials_grant(&id, &secret).await
        }
        Some("refresh_token") => {
            let token = required(&form.refresh_token, "refresh_token", "refresh_token")?;
            let (result, subject) = auth.refresh_grant_of(token).await;
            *refresh_subject = subject;
            result
        }
        Some(other) => {
            let shown: String = other.chars().take(40).collect();
            Err(GrantError::UnsupportedGrantType(format!(
                "grant_type {shown:?} is not supported: use password, client_credentials or refresh_token"
            )))
        }
    }
}

/// Who a token request claims to be (the user name of a password grant, the
/// client id of client credentials), for the audit log; never a secret.
fn claimed(headers: &HeaderMap, form: &TokenForm) -> Option<String> {
    match form.grant_type.as_deref() {
        Some("password") => form.username.clone(),
        Some("client_credentials") => {
            form.client_id.clone().or_else(|| basic_credentials(headers).ok().flatten().map(|(id, _)| id))
        }
        _ => None,
    }
}

async fn token(
    State(s): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<TokenForm>, FormRejection>,
) -> Response {
    let (result, subject) = match form {
        Ok(Form(f)) => {
            let claimed = claimed(&headers, &f);
            let mut refresh_subject = None;
            let result = grant(&s.auth, &headers, f, &mut refresh_subject).await;
            (result, claimed.or(refresh_subject))
        }
        Err(e) => (Err(form_error(&e)), None),
    };
    let (mut r, actor) = match result {
        Ok(t) => {
            let actor = Actor { subject: Some(t.subject.clone()), role: Some(t.role) };
            (no_store(Json(t).into_response()), actor)
        }
        Err(e) => (error_response(e), Actor { subject, role: None }),
    };
    r.extensions_mut().insert(actor);
    r
}

/// The parameters of `POST /revoke`.
#[derive(Debug, Deserialize)]
struct RevokeForm {
    token: Option<String>,
    token_type_hint: Option<String>,
}

async fn revoke(State(s): State<AppState>, form: Result<Form<RevokeForm>, FormRejection>) -> Response {
    let result = match form {
        Ok(Form(f)) => match f.token.as_deref().filter(|t| !t.is_empty()) {
            Some(t) => s.auth.revoke(t, f.token_type_hint.as_deref()).await,
            None => Err(GrantError::InvalidRequest("the parameter token is missing".into())),
        },
        Err(e) => Err(form_error(&e)),
    };
    match result {
        Ok(()) => no_store(StatusCode::OK.into_response()),
        Err(e) => error_response(e),
    }
}

async fn rate_limit(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    if s.limiter.len() > LIMITER_MAX_KEYS {
        s.limiter.retain_recent();
    }
    match s.limiter.check_key(&ip) {
        Ok(()) => next.run(req).await,
        Err(not_until) => {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            tracing::info!(%ip, retry_after_secs = secs, "token endpoint rate limit reached");
            let body = ErrorBody {
                error: "temporarily_unavailable",
                error_description: format!("too many token requests from {ip}: retry after {secs} s"),
            };
            let mut r = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            no_store(r)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn basic(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn basic_credentials_are_decoded_with_form_escapes() {
        assert_eq!(basic_credentials(&HeaderMap::new()).unwrap(), None);
        let v = format!("Basic {}", STANDARD.encode("dcc_1:s%3Acret+x"));
        assert_eq!(basic_credentials(&basic(&v)).unwrap(), Some(("dcc_1".into(), "s:cret x".into())));
        assert!(matches!(basic_credentials(&basic("Bearer abc")), Err(GrantError::InvalidClient(_))));
        assert!(matches!(basic_credentials(&basic("Basic !!!")), Err(GrantError::InvalidClient(_))));
        let no_colon = format!("Basic {}", STANDARD.encode("nocolon"));
        assert!(matches!(basic_credentials(&basic(&no_colon)), Err(GrantError::InvalidClient(_))));
    }
}
