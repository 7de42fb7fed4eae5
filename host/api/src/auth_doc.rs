//! The token authority's operations in the OpenAPI document: `dc_auth::router`
//! (`POST /token`, `POST /revoke`), which [`crate::router_with_auth`] mounts at
//! `/api/v1/auth`. dc-auth knows nothing of utoipa, so the shapes of its RFC
//! 6749 / RFC 7009 form bodies and JSON answers are declared here, and only
//! a document whose router serves them includes them.

#![allow(dead_code)] // the types and functions only describe; dc-auth serves

use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};

/// An OAuth2 grant type.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GrantType {
    /// A person: `username` and `password`.
    Password,
    /// A service: `client_id` and `client_secret` (in the form or HTTP Basic).
    ClientCredentials,
    /// A new access token for a refresh token (which is rotated).
    RefreshToken,
}

/// The form of `POST /auth/token` (RFC 6749); unknown parameters are ignored.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenRequest {
    /// `password`, `client_credentials` or `refresh_token`.
    pub grant_type: GrantType,
    /// The user (password grant).
    pub username: Option<String>,
    /// The user's password (password grant).
    pub password: Option<String>,
    /// The client id (client-credentials grant, unless sent with HTTP Basic).
    pub client_id: Option<String>,
    /// The client secret (client-credentials grant, unless sent with HTTP Basic).
    pub client_secret: Option<String>,
    /// The refresh token (refresh grant).
    pub refresh_token: Option<String>,
}

/// A successful token answer (RFC 6749 §5.1).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenAnswer {
    /// The access token (an EdDSA JWT), for `Authorization: Bearer`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// A new refresh token (password and refresh grants).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
}

/// An OAuth2 error (RFC 6749 §5.2): `invalid_request`, `invalid_client`,
/// `invalid_grant`, `unsupported_grant_type`, `unsupported_token_type`,
/// `temporarily_unavailable` (also when rate-limited), `server_error`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OAuthError {
    /// The error code.
    pub error: String,
    /// What went wrong, for people.
    pub error_description: String,
}

/// The form of `POST /auth/revoke` (RFC 7009); unknown parameters are ignored.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RevokeRequest {
    /// The refresh token to revoke (its whole family is revoked); an unknown
    /// one is not an error. Refresh tokens are 43 base64url characters. An
    /// access token (a JWT: three parts joined by dots) cannot be revoked
    /// (it expires on its own): 400 `unsupported_token_type`; an empty one
    /// 400 `invalid_request`.
    #[schema(min_length = 1, max_length = 1000, pattern = "^[A-Za-z0-9_-]+$")]
    pub token: String,
    /// What `token` is; only `refresh_token` can be revoked (with
    /// `access_token`, a token that is no refresh token is answered 400
    /// `unsupported_token_type`).
    #[schema(value_type = TokenTypeHint, required = false)]
    pub token_type_hint: Option<TokenTypeHint>,
}

/// A revocation's token type hint (RFC 7009 §2.1).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenTypeHint {
    /// A refresh token.
    RefreshToken,
}

/// Issues an access token: the password grant for people, client
/// credentials for services, refresh tokens (rotated on every use). No
/// bearer token needed; each client address may make `auth.token_rate_burst`
/// requests at once and `auth.token_rate_per_minute` per minute. Every call
/// is in the audit log (failed ones too, never the secret).
#[utoipa::path(post, path = "/api/v1/auth/token", operation_id = "issueToken", tag = "auth",
    request_body(content = TokenRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "a token", body = TokenAnswer),
        (status = 400, description = "a bad request or grant", body = OAuthError),
        (status = 401, description = "client authentication failed", body = OAuthError),
        (status = 413, description = "the body is larger than api.max_body_kb"),
        (status = 429, description = "too many token requests from this address",
            headers(("Retry-After" = u64, description = "seconds to wait")), body = OAuthError),
        (status = 503, description = "the token service is unavailable", body = OAuthError),
    ))]
async fn token() {}

/// Revokes a refresh token and its family (RFC 7009); 200 also for an
/// unknown token. No bearer token needed; rate-limited like the token endpoint.
#[utoipa::path(post, path = "/api/v1/auth/revoke", operation_id = "revokeToken", tag = "auth",
    request_body(content = RevokeRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "revoked (or unknown)"),
        (status = 400, description = "a bad request", body = OAuthError),
        (status = 413, description = "the body is larger than api.max_body_kb"),
        (status = 429, description = "too many requests from this address",
            headers(("Retry-After" = u64, description = "seconds to wait")), body = OAuthError),
        (status = 503, description = "the token service is unavailable", body = OAuthError),
    ))]
async fn revoke() {}

#[derive(OpenApi)]
#[openapi(
    paths(token, revoke),
    tags((name = "auth", description = "OAuth2 token endpoint (RFC 6749) and revocation (RFC 7009)"))
)]
struct AuthDoc;

/// The token authority's part of the document.
pub fn doc() -> utoipa::openapi::OpenApi {
    AuthDoc::openapi()
}
