//! Storage of the control plane's accounts and tokens (`dc_auth_*` tables):
//! users (people, password grant), clients (services, client-credentials
//! grant), refresh tokens and the public halves of the JWT signing keys. All
//! SQL about them lives here; the policy (hashing, JWTs, grants) is `dc-auth`'s.
//!
//! Only hashes are stored: passwords and client secrets as argon2id PHC
//! strings, refresh tokens as the hex SHA-256 of the token. A refresh token
//! is used once: [`rotate_refresh_token`] marks it used and inserts its
//! successor in one write transaction, and presenting a used token again
//! revokes its whole family (reuse detection). Removing or disabling a
//! subject, or changing its password, revokes its refresh tokens in the same
//! transaction.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::access::Role;
use crate::db::{Database, DbError, WriteTx};
use crate::{on_pool, on_tx};

/// Who a refresh token was issued to.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum SubjectKind {
    /// A person (`dc_auth_users`).
    User,
    /// A service (`dc_auth_clients`).
    Client,
}

impl SubjectKind {
    /// The stored name (`user`, `client`).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One row of `dc_auth_users`. The password hash is never serialized.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct UserRow {
    /// Login name.
    pub name: String,
    /// What the user may do.
    #[sqlx(try_from = "String")]
    pub role: Role,
    /// argon2id PHC string.
    #[serde(skip_serializing)]
    pub password_hash: String,
    /// A disabled user gets no tokens and its tokens are refused.
    pub disabled: bool,
    /// When the user was added.
    pub created_at: DateTime<Utc>,
    /// When its password, role or state last changed.
    pub updated_at: DateTime<Utc>,
}

/// One row of `dc_auth_clients`. The secret hash is never serialized.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ClientRow {
    /// The id a service authenticates with (generated).
    pub client_id: String,
    /// The operator's name for it (unique).
    pub name: String,
    /// What the client may do.
    #[sqlx(try_from = "String")]
    pub role: Role,
    /// argon2id PHC string of the secret.
    #[serde(skip_serializing)]
    pub secret_hash: String,
    /// A disabled client gets no tokens and its tokens are refused.
    pub disabled: bool,
    /// When the client was added.
    pub created_at: DateTime<Utc>,
}

/// A refresh token to store (its hash, never the token).
#[derive(Debug, Clone)]
pub struct NewRefreshToken {
    /// Row id.
    pub id: String,
    /// Hex SHA-256 of the token.
    pub token_hash: String,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
    /// When it stops being accepted.
    pub expires_at: DateTime<Utc>,
}

/// What presenting a refresh token did ([`rotate_refresh_token`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The token was valid: it is now used and its successor is stored.
    Rotated {
        /// The subject it was issued to.
        subject: String,
        /// Its kind.
        kind: SubjectKind,
        /// The family (shared by the successor).
        family_id: String,
    },
    /// The token had been used before: the whole family is now revoked.
    Reused {
        /// The subject it was issued to.
        subject: String,
        /// The revoked family.
        family_id: String,
    },
    /// The token (or its family) was revoked.
    Revoked {
        /// The subject it was issued to.
        subject: String,
    },
    /// The token expired.
    Expired {
        /// The subject it was issued to.
        subject: String,
    },
    /// No such token.
    Unknown,
}

/// One row of `dc_auth_keys`: the public half of a signing key.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct KeyRow {
    /// Key id (the JWT `kid`).
    pub kid: String,
    /// JWT algorithm name (`EdDSA`).
    pub algorithm: String,
    /// The public key (base64url, no padding).
    pub public_key: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When a newer key replaced it (it verifies for a grace period after).
    pub retired_at: Option<DateTime<Utc>>,
}

// ---------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------

/// Adds a user; false (nothing written) when the name is taken.
pub async fn add_user(
    db: &Database,
    name: &str,
    role: Role,
    password_hash: &str,
    now: DateTime<Utc>,
) -> Result<bool, DbError> {
    let mut tx = db.begin_write().await?;
    let n = on_tx!(&mut tx, conn => sqlx::query(
        "INSERT INTO dc_auth_users (name, role, password_hash, disabled, created_at, updated_at) \
         VALUES ($1, $2, $3, FALSE, $4, $4) ON CONFLICT (name) DO NOTHING")
        .bind(name).bind(role.as_str()).bind(password_hash).bind(now)
        .execute(&mut *conn).await.map(|r| r.rows_affected()))?;
    tx.commit().await?;
    Ok(n == 1)
}

/// The user called `name`, if any.
pub async fn get_user(db: &Database, name: &str) -> Result<Option<UserRow>, DbError> {
    Ok(on_pool!(db, pool => sqlx::query_as::<_, UserRow>("SELECT * FROM dc_auth_users WHERE name = $1")
        .bind(name).fetch_optional(pool).await)?)
}

/// Every user, by name.
pub async fn list_users(db: &Database) -> Result<Vec<UserRow>, DbError> {
    Ok(on_pool!(db, pool => sqlx::query_as::<_, UserRow>("SELECT * FROM dc_auth_users ORDER BY name")
        .fetch_all(pool).await)?)
}

/// Replaces a user's password hash and revokes its refresh tokens; false when
/// there is no such user.
pub async fn set_user_password(
    db: &Database,
    name: &str,
    password_hash: &str,
    now: DateTime<Utc>,
) -> Result<bool, DbError> {
    let mut tx = db.begin_write().await?;
    let n = on_tx!(&mut tx, conn => sqlx::query(
        "UPDATE dc_auth_users SET password_hash = $1, updated_at = $2 WHERE name = $3")
        .bind(password_hash).bind(now).bind(name)
        .execute(&mut *conn).await.map(|r| r.rows_affected()))?;
    if n == 1 {
        revoke_subject_in(&mut tx, SubjectKind::User, name, now).await?;
    }
    tx.commit().await?;
    Ok(n == 1)
}

/// Disables or enables a user; disabling revokes its refresh tokens. False
/// when there is no such user.
pub async fn set_user_disabled(db: &Database, name: &str, disabled: bool, now: DateTime<Utc>) -> Result<bool, DbError> {
    let mut tx = db.begin_write().await?;
    let n = on_tx!(&mut tx, conn => sqlx::query(
        "UPDATE dc_auth_users SET disabled = $1, updated_at = $2 WHERE name = $3")
        .bind(disabled).bind(now).bind(name)
        .execute(&mut *conn).await.map(|r| r.rows_affected()))?;
    if n == 1 && disabled {
        revoke_subject_in(&mut tx, SubjectKind::User, name, now).await?;
    }
    tx.commit().await?;
    Ok(n == 1)
}

/// Removes a user and revokes its refresh tokens, in one transaction; false
/// when there is no such user.
pub async fn remove_user(db: &Database, name: &str, now: DateTime<Utc>) -> Result<bool, DbError> {
    let mut tx = db.begin_write().await?;
    let n = on_tx!(&mut tx, conn => sqlx::query("DELETE FROM dc_auth_users WHERE name = $1")
        .bind(name).execute(&mut *conn).await.map(|r| r.rows_affected()))?;
    if n == 1 {
        revoke_subject_in(&mut tx, SubjectKind::User, name, now).await?;
    }
    tx.commit().await?;
    Ok(n == 1)
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

/// Adds a client; false (nothing written) when the name or id is taken.
pub async fn add_client(
    db: &Database,
    client_id: &str,
    name: &str,
    role: Role,
    secret_hash: &str,
    now: DateTime<Utc>,
) -> Result<bool, DbError> {
    let mut tx = db.begin_write().await?;
    let n = on_tx!(&mut tx, conn => sqlx::query(
        "INSERT INTO dc_auth_clients (client_id, name, role, secret_hash, disabled, created_at) \
         VALUES ($1, $2, $3, $4, FALSE, $5) ON CONFLICT DO NOTHING")
        .bind(client_id).bind(name).bind(role.as_str()).bind(secret_hash).bind(now)
        .execute(&mut *conn).await.map(|r| r.rows_affected()))?;
    tx.commit().await?;
    Ok(n == 1)
}

/// The client with this id, if any.
pub async fn get_client(db: &Database, client_id: &str) -> Result<Option<ClientRow>, DbError> {
    Ok(on_pool!(db, pool => sqlx::query_as::<_, ClientRow>("SELECT * FROM dc_auth_clients WHERE client_id = $1")
        .bind(client_id).fetch_optional(pool).await)?)
}

/// Every client, by name.
pub async fn list_clients(db: &Database) -> Result<Vec<ClientRow>, DbError> {
    Ok(on_pool!(db, pool => sqlx::query_as::<_, ClientRow>("SELECT * FROM dc_auth_clients ORDER BY name")
        .fetch_all(pool).await)?)
}

/// Removes the client called `name` and revokes its refresh tokens; returns
/// its client id, or None when there is no such client.
pub async fn remove_client(db: &Database, name: &str, now: DateTime<Utc>) -> Result<Option<String>, DbError> {
    let mut tx = db.begin_write().await?;
    let id: Option<String> = on_tx!(&mut tx, conn => sqlx::query_scalar(
        "DELETE FROM dc_auth_clients WHERE name = $1 RETURNING client_id")
        .bind(name).fetch_optional(&mut *conn).await)?;
    if let Some(id) = &id {
        revoke_subject_in(&mut tx, SubjectKind::Client, id, now).await?;
    }
    tx.commit().await?;
    Ok(id)
}

// ---------------------------------------------------------------------------
// Refresh tokens
// ---------------------------------------------------------------------------

/// Stores the first refresh token of a new family.
pub async fn insert_refresh_token(
    db: &Database,
    token: &NewRefreshToken,
    family_id: &str,
    kind: SubjectKind,
    subject: &str,
) -> Result<(), DbError> {
    let mut tx = db.begin_write().await?;
    insert_token_in(&mut tx, token, family_id, kind, subject).await?;
    tx.commit().await
}

async fn insert_token_in(
    tx: &mut WriteTx,
    token: &NewRefreshToken,
    family_id: &str,
    kind: SubjectKind,
    subject: &str,
) -> Result<(), DbError> {
    on_tx!(tx, conn => sqlx::query(
        "INSERT INTO dc_auth_refresh_tokens (id, family_id, subject, subject_kind, token_hash, issued_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)")
        .bind(&token.id).bind(family_id).bind(subject).bind(kind.as_str()).bind(&token.token_hash)
        .bind(token.issued_at).bind(token.expires_at)
        .execute(&mut *conn).await.map(|r| r.rows_affected()))?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct TokenState {
    family_id: String,
    subject: String,
    expires_at: DateTime<Utc>,
    used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

/// Presents the refresh token with hash `token_hash` at `now`, in one write
/// transaction: a valid token is marked used (a compare-and-set on `used_at`,
/// so of two concurrent presentations exactly one wins) and `next` is stored
/// as its successor in the same family; a token used before revokes its whole
/// family ([`Rotation::Reused`]).
pub async fn rotate_refresh_token(
    db: &Database,
    token_hash: &str,
    next: &NewRefreshToken,
    now: DateTime<Utc>,
) -> Result<Rotation, DbError> {
    let mut tx = db.begin_write().await?;
    let claimed: Option<(String, String, String)> = on_tx!(&mut tx, conn => sqlx::query_as(
        "UPDATE dc_auth_refresh_tokens SET used_at = $1 \
         WHERE token_hash = $2 AND used_at IS NULL AND revoked_at IS NULL AND expires_at > $1 \
         RETURNING family_id, subject, subject_kind")
        .bind(now).bind(token_hash).fetch_optional(&mut *conn).await)?;
    if let Some((family_id, subject, kind)) = claimed {
        let kind: SubjectKind =
            kind.parse().map_err(|_| DbError::Refused(format!("refresh token of unknown subject kind {kind:?}")))?;
        insert_token_in(&mut tx, next, &family_id, kind, &subject).await?;
        tx.commit().await?;
        return Ok(Rotation::Rotated { subject, kind, family_id });
    }
    let state: Option<TokenState> = on_tx!(&mut tx, conn => sqlx::query_as(
        "SELECT family_id, subject, expires_at, used_at, revoked_at \
         FROM dc_auth_refresh_tokens WHERE token_hash = $1")
        .bind(token_hash).fetch_optional(&mut *conn).await)?;
    let outcome = match state {
        None => Rotation::Unknown,
        Some(s) if s.revoked_at.is_some() => Rotation::Revoked { subject: s.subject },
        Some(s) if s.used_at.is_some() => {
            revoke_family_in(&mut tx, &s.family_id, now).await?;
            Rotation::Reused { subject: s.subject, family_id: s.family_id }
        }
        Some(s) if s.expires_at <= now => Rotation::Expired { subject: s.subject },
        // not claimable a moment ago but neither used, revoked nor expired:
        // cannot happen inside one transaction; refuse rather than guess
        Some(s) => Rotation::Revoked { subject: s.subject },
    };
    tx.commit().await?;
    Ok(outcome)
}

/// Revokes the family of the refresh token with hash `token_hash` (RFC 7009
/// revocation); returns whether such a token exists.
pub async fn revoke_refresh_token(db: &Database, token_hash: &str, now: DateTime<Utc>) -> Result<bool, DbError> {
    let mut tx = db.begin_write().await?;
    let family: Option<String> = on_tx!(&mut tx, conn => sqlx::query_scalar(
        "SELECT family_id FROM dc_auth_refresh_tokens WHERE token_hash = $1")
        .bind(token_hash).fetch_optional(&mut *conn).await)?;
    if let Some(f) = &family {
        revoke_family_in(&mut tx, f, now).await?;
    }
    tx.commit().await?;
    Ok(family.is_some())
}

/// Revokes every refresh token of a family.
pub async fn revoke_family(db: &Database, family_id: &str, now: DateTime<Utc>) -> Result<(), DbError> {
    let mut tx = db.begin_write().await?;
    revoke_family_in(&mut tx, family_id, now).await?;
    tx.commit().await
}

async fn revoke_family_in(tx: &mut WriteTx, family_id: &str, now: DateTime<Utc>) -> Result<(), DbError> {
    on_tx!(tx, conn => sqlx::query(
        "UPDATE dc_auth_refresh_tokens SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL")
        .bind(now).bind(family_id).execute(&mut *conn).await.map(|r| r.rows_affected()))?;
    Ok(())
}

async fn revoke_subject_in(
    tx: &mut WriteTx,
    kind: SubjectKind,
    subject: &str,
    now: DateTime<Utc>,
) -> Result<(), DbError> {
    on_tx!(tx, conn => sqlx::query(
        "UPDATE dc_auth_refresh_tokens SET revoked_at = $1 \
         WHERE subject_kind = $2 AND subject = $3 AND revoked_at IS NULL")
        .bind(now).bind(kind.as_str()).bind(subject).execute(&mut *conn).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Refresh tokens that are neither used, revoked nor expired at `now`, per
/// family: (family id, subject kind, subject).
pub async fn live_refresh_families(
    db: &Database,
    now: DateTime<Utc>,
) -> Result<Vec<(String, String, String)>, DbError> {
    Ok(on_pool!(db, pool => sqlx::query_as(
        "SELECT family_id, subject_kind, subject FROM dc_auth_refresh_tokens \
         WHERE used_at IS NULL AND revoked_at IS NULL AND expires_at > $1 ORDER BY family_id")
        .bind(now).fetch_all(pool).await)?)
}

/// Deletes refresh tokens that expired before `before` (they are refused
/// anyway); returns how many.
pub async fn purge_refresh_tokens(db: &Database, before: DateTime<Utc>) -> Result<u64, DbError> {
    let mut tx = db.begin_write().await?;
    let n = on_tx!(&mut tx, conn => sqlx::query("DELETE FROM dc_auth_refresh_tokens WHERE expires_at < $1")
        .bind(before).execute(&mut *conn).await.map(|r| r.rows_affected()))?;
    tx.commit().await?;
    Ok(n)
}

// ---------------------------------------------------------------------------
// Signing keys (public halves)
// ---------------------------------------------------------------------------

/// Every signing key, newest first.
pub async fn list_keys(db: &Database) -> Result<Vec<KeyRow>, DbError> {
    Ok(on_pool!(db, pool => sqlx::query_as::<_, KeyRow>(
        "SELECT * FROM dc_auth_keys ORDER BY created_at DESC, kid DESC").fetch_all(pool).await)?)
}

/// Stores `key` as the first signing key unless an unretired key exists
/// (checked in the same write transaction, so of two hosts starting at once
/// one inserts); returns whether it was stored.
pub async fn insert_first_key(db: &Database, key: &KeyRow) -> Result<bool, DbError> {
    let mut tx = db.begin_write().await?;
    let active: i64 = on_tx!(&mut tx, conn => sqlx::query_scalar(
        "SELECT COUNT(*) FROM dc_auth_keys WHERE retired_at IS NULL").fetch_one(&mut *conn).await)?;
    if active > 0 {
        tx.rollback().await?;
        return Ok(false);
    }
    insert_key_in(&mut tx, key).await?;
    tx.commit().await?;
    Ok(true)
}

/// Makes `key` the current signing key: retires every other unretired key at
/// `now` and stores `key`, in one transaction.
pub async fn rotate_key(db: &Database, key: &KeyRow, now: DateTime<Utc>) -> Result<(), DbError> {
    let mut tx = db.begin_write().await?;
    on_tx!(&mut tx, conn => sqlx::query("UPDATE dc_auth_keys SET retired_at = $1 WHERE retired_at IS NULL")
        .bind(now).execute(&mut *conn).await.map(|r| r.rows_affected()))?;
    insert_key_in(&mut tx, key).await?;
    tx.commit().await
}

async fn insert_key_in(tx: &mut WriteTx, key: &KeyRow) -> Result<(), DbError> {
    on_tx!(tx, conn => sqlx::query(
        "INSERT INTO dc_auth_keys (kid, algorithm, public_key, created_at, retired_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&key.kid).bind(&key.algorithm).bind(&key.public_key).bind(key.created_at).bind(key.retired_at)
        .execute(&mut *conn).await.map(|r| r.rows_affected()))?;
    Ok(())
}

/// Deletes the keys retired before `before` (their grace period is over);
/// returns their key ids.
pub async fn delete_keys_retired_before(db: &Database, before: DateTime<Utc>) -> Result<Vec<String>, DbError> {
    let mut tx = db.begin_write().await?;
    let kids: Vec<String> = on_tx!(&mut tx, conn => sqlx::query_scalar(
        "DELETE FROM dc_auth_keys WHERE retired_at IS NOT NULL AND retired_at < $1 RETURNING kid")
        .bind(before).fetch_all(&mut *conn).await)?;
    tx.commit().await?;
    Ok(kids)
}
