//! dc-auth: the control plane's token authority. People log in with a user
//! name and password (OAuth2 password grant), services with a client id and
//! secret (client-credentials grant); both get short-lived JWT access tokens
//! signed with Ed25519, people also a refresh token that is rotated on every
//! use (a reused one revokes its family). [`Authority`] implements
//! `dc_core::access::Authenticate` for the REST API, [`router`] serves
//! `POST /token` and `POST /revoke` (mounted at `/api/v1/auth`), and
//! [`accounts`] manages users and clients for the CLI.
//!
//! Modules: `password` (argon2id, random values, token hashes), `jwt` (claims,
//! signing, pinned-algorithm verification, key sets), `vault` (private
//! signing keys in the secrets store), `authority` (grants, key rotation,
//! bearer verification), `accounts` (users and clients), `http` (the axum
//! router, RFC 6749 / RFC 7009 wire format, rate limit). SQL lives in
//! `dc_core::auth_store`.

pub mod accounts;
pub mod authority;
pub mod http;
pub mod jwt;
pub mod password;
pub mod vault;

pub use authority::{Authority, GrantError, TokenResponse};
pub use http::router;

use dc_core::{DbError, ErrorKind};

/// A failure of the token authority or of account management. The message
/// names the thing and what to do.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Bad input (a name, a role, a password).
    #[error("{0}")]
    Invalid(String),
    /// The name is taken.
    #[error("{0}")]
    Conflict(String),
    /// No such user, client or key.
    #[error("{0}")]
    NotFound(String),
    /// The database or the secrets store cannot be used right now.
    #[error("{0}")]
    Unavailable(String),
    /// A failure of dc-auth itself.
    #[error("{0}")]
    Internal(String),
    /// A database failure.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl AuthError {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            AuthError::Invalid(_) => ErrorKind::Invalid,
            AuthError::Conflict(_) => ErrorKind::Conflict,
            AuthError::NotFound(_) => ErrorKind::NotFound,
            AuthError::Unavailable(_) => ErrorKind::Unavailable,
            AuthError::Internal(_) => ErrorKind::Internal,
            AuthError::Db(e) => e.kind(),
        }
    }
}
