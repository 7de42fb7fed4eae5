//! The one error shape of the API, `{"error": {"code", "message"}}`, and how
//! the libraries' typed errors map to statuses: `ErrorKind::http_status`
//! (404, 409, 422, 503, 500). A 5xx body never carries internal detail: the
//! detail is logged (inside the request's span, which carries its request id)
//! and the body points at the `x-request-id` response header.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use dc_core::ErrorKind;
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code (`not_found`, `conflict`, `invalid`,
    /// `invalid_query`, `malformed_json`, `unauthorized`, `forbidden`, …).
    pub code: String,
    /// What was wrong and what to do, for people.
    pub message: String,
}

/// An error answer: status, code, message (and for 401 the challenge).
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    challenge: Option<&'static str>,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), challenge: None }
    }

    /// 422: the input is wrong.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", message)
    }

    /// 409: the request contradicts the current state.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 401 with `WWW-Authenticate: Bearer`; `invalid_token` when a token was
    /// sent but not accepted (RFC 6750).
    pub fn unauthorized(message: impl Into<String>, token_sent: bool) -> ApiError {
        ApiError {
            status: StatusCode::UNAUTHORIZED,
            code: "unauthorized",
            message: message.into(),
            challenge: Some(if token_sent {
                "Bearer realm=\"dc-host\", error=\"invalid_token\""
            } else {
                "Bearer realm=\"dc-host\""
            }),
        }
    }

    /// 403: authenticated, but the role does not allow it.
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// An error of `kind` whose message is `detail`; for 5xx kinds the detail
    /// is logged, not answered.
    pub fn of_kind(kind: ErrorKind, detail: String) -> ApiError {
        let status = StatusCode::from_u16(kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        match kind {
            ErrorKind::NotFound => ApiError::new(status, "not_found", detail),
            ErrorKind::Conflict => ApiError::new(status, "conflict", detail),
            ErrorKind::Invalid => ApiError::new(status, "invalid", detail),
            ErrorKind::Unavailable => {
                tracing::warn!(error = %detail, "request failed: a dependency is unavailable");
                ApiError::new(
                    status,
                    "unavailable",
                    "the database is unavailable or busy; retry later (the host log has the cause under this response's x-request-id)",
                )
            }
            ErrorKind::Internal => {
                tracing::error!(error = %detail, "request failed");
                ApiError::new(
                    status,
                    "internal",
                    "internal error; the host log has the cause under this response's x-request-id",
                )
            }
        }
    }
}

impl From<dc_core::DbError> for ApiError {
    fn from(e: dc_core::DbError) -> ApiError {
        ApiError::of_kind(e.kind(), e.to_string())
    }
}

impl From<dc_runtime::RuntimeError> for ApiError {
    fn from(e: dc_runtime::RuntimeError) -> ApiError {
        ApiError::of_kind(e.kind(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code.to_string(), message: self.message } };
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(challenge) = self.challenge {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_statuses_and_5xx_hide_the_detail() {
        let e = ApiError::of_kind(ErrorKind::NotFound, "no app \"x\"".into());
        assert_eq!((e.status.as_u16(), e.code, e.message.as_str()), (404, "not_found", "no app \"x\""));
        assert_eq!(ApiError::of_kind(ErrorKind::Conflict, "c".into()).status.as_u16(), 409);
        assert_eq!(ApiError::of_kind(ErrorKind::Invalid, "i".into()).status.as_u16(), 422);
        let e = ApiError::of_kind(ErrorKind::Unavailable, "connect postgres://u:pw@h failed".into());
        assert_eq!(e.status.as_u16(), 503);
        assert!(!e.message.contains("pw") && !e.message.contains("postgres"), "{}", e.message);
        let e = ApiError::of_kind(ErrorKind::Internal, "/var/lib/secret path".into());
        assert_eq!(e.status.as_u16(), 500);
        assert!(!e.message.contains("/var/lib"), "{}", e.message);
    }
}
