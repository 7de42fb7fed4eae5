//! The token authority: the three grants (password, client credentials,
//! refresh token), refresh-token revocation, signing-key rotation and the
//! verification of bearer tokens (`dc_core::access::Authenticate`).
//!
//! # Keys
//! The newest key in `dc_auth_keys` without `retired_at` signs; its private
//! half comes from the secrets store ([`KeyVault`]). [`Authority::rotate_key`]
//! makes a new key current, retires the others (they keep verifying for
//! `auth.key_grace_secs`), deletes the private halves of retired keys (they
//! never sign again) and the public halves whose grace period is over.
//! Verification uses a cached [`KeySet`], reloaded from the database every
//! [`KEY_CACHE_SECS`] and when a token names an unknown key (at most once per
//! [`UNKNOWN_KID_RELOAD_SECS`]), so a rotation made by another process is
//! seen within a minute.
//!
//! # Subjects
//! Every bearer token's subject is looked up (one primary-key read): a removed
//! or disabled user or client is refused even with an unexpired token, a
//! token issued before its subject was (re)created is refused, and the role
//! is the subject's current role, not the one in the token. What was read is
//! kept for `auth.subject_cache_secs` (default 5 s; 0: read on every
//! request): users and clients are changed by the CLI, another process, so a
//! role change, disabling or removal applies to bearer tokens within that
//! time — the staleness bound. A password, client-credentials or refresh
//! grant reads its subject fresh and updates what is kept.
//!
//! # Verified tokens
//! A token whose signature, algorithm, `iss` and `aud` verified is kept (by
//! the SHA-256 of its text, at most [`TOKEN_CACHE_CAPACITY`] tokens), so the
//! next request with it skips the Ed25519 check. Everything that can change
//! is checked again on every request: `exp` and `nbf` against the clock, its
//! signing key against the current key set (a key dropped or retired past its
//! grace period refuses it as before), and its subject as above.
//!
//! Every time check uses the injected clock.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use dc_core::access::{AuthFailure, Authenticate, Principal, Role};
use dc_core::auth_store::{self, NewRefreshToken, Rotation, SubjectKind};
use dc_core::settings::AuthSettings;
use dc_core::{Database, Settings};
use dc_scheduler::{Clock, SystemClock};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::AuthError;
use crate::jwt::{Claims, KeySet, SigningKey};
use crate::password;
use crate::vault::KeyVault;

/// The verification keys are reloaded from the database at least this often.
pub const KEY_CACHE_SECS: i64 = 60;
/// A token with an unknown key id reloads the keys at most this often.
pub const UNKNOWN_KID_RELOAD_SECS: i64 = 5;
/// Verified access tokens kept (the least recently useful go first).
pub const TOKEN_CACHE_CAPACITY: usize = 10_000;
/// Subjects kept (see `auth.subject_cache_secs`).
pub const SUBJECT_CACHE_CAPACITY: usize = 10_000;

/// What a verified token says that later requests need.
#[derive(Debug)]
struct VerifiedToken {
    kid: String,
    sub: String,
    kind: SubjectKind,
    iat: i64,
    exp: i64,
    nbf: i64,
}

/// A subject's row as last read: role, disabled, created (None: no such
/// subject), and when it was read.
type SubjectState = Option<(Role, bool, DateTime<Utc>)>;

#[derive(Debug, Clone)]
struct KeptSubject {
    state: SubjectState,
    read_at: DateTime<Utc>,
}

/// A successful token response (RFC 6749 §5.1).
#[derive(Debug, Clone, Serialize)]
pub struct TokenResponse {
    /// The JWT.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// A new refresh token (password and refresh grants only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Whom the token was issued to (not sent; the audit log records it).
    #[serde(skip)]
    pub subject: String,
    /// Its role (not sent).
    #[serde(skip)]
    pub role: Role,
}

/// Why a grant or a revocation was refused (RFC 6749 §5.2 codes).
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// A parameter is missing, repeated or malformed.
    #[error("{0}")]
    InvalidRequest(String),
    /// Client authentication failed.
    #[error("{0}")]
    InvalidClient(String),
    /// The credentials or the refresh token are not valid.
    #[error("{0}")]
    InvalidGrant(String),
    /// A `grant_type` other than password, client_credentials, refresh_token.
    #[error("{0}")]
    UnsupportedGrantType(String),
    /// Revocation of a token type that cannot be revoked (access tokens).
    #[error("{0}")]
    UnsupportedTokenType(String),
    /// The authority could not do its work (database, secrets store).
    #[error(transparent)]
    Server(#[from] AuthError),
}

impl From<dc_core::DbError> for GrantError {
    fn from(e: dc_core::DbError) -> GrantError {
        GrantError::Server(AuthError::Db(e))
    }
}

#[derive(Debug, Default)]
struct KeyCache {
    set: Arc<KeySet>,
    loaded_at: Option<DateTime<Utc>>,
    signing: Option<SigningKey>,
}

/// The token authority. Cheap to share behind an `Arc`.
pub struct Authority {
    db: Database,
    cfg: AuthSettings,
    vault: KeyVault,
    clock: Arc<dyn Clock>,
    cache: RwLock<KeyCache>,
    /// Verified tokens by the SHA-256 of their text.
    tokens: quick_cache::sync::Cache<[u8; 32], Arc<VerifiedToken>>,
    /// Subjects as last read (`auth.subject_cache_secs`).
    subjects: quick_cache::sync::Cache<(SubjectKind, String), KeptSubject>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").field("issuer", &self.cfg.issuer).finish_non_exhaustive()
    }
}

/// What [`Authority::rotate_key`] did.
#[derive(Debug, Clone, Serialize)]
pub struct KeyRotation {
    /// The new current key.
    pub kid: String,
    /// Keys retired now (they verify for the grace period).
    pub retired: Vec<String>,
    /// Keys whose grace period was over, now deleted.
    pub dropped: Vec<String>,
}

fn secs(n: u64) -> TimeDelta {
    TimeDelta::seconds(i64::try_from(n).unwrap_or(i64::MAX))
}

impl Authority {
    /// An authority over `db` with the `[auth]` settings, the private keys in
    /// `vault` and the time from `clock`. Call [`Authority::ensure_signing_key`]
    /// before issuing tokens.
    pub fn new(db: Database, cfg: AuthSettings, vault: KeyVault, clock: Arc<dyn Clock>) -> Authority {
        Authority {
            db,
            cfg,
            vault,
            clock,
            cache: RwLock::new(KeyCache::default()),
            tokens: quick_cache::sync::Cache::new(TOKEN_CACHE_CAPACITY),
            subjects: quick_cache::sync::Cache::new(SUBJECT_CACHE_CAPACITY),
        }
    }

    /// The authority the settings configure: the system clock and the
    /// configured secrets store.
    pub fn configured(db: Database, settings: &Settings) -> Authority {
        Authority::new(db, settings.auth.clone(), KeyVault::configured(settings), Arc::new(SystemClock))
    }

    /// [`Authority::configured`], with a signing key made if there is none
    /// yet: what `dc-host serve` starts with.
    pub async fn open(db: Database, settings: &Settings) -> Result<Authority, AuthError> {
        let auth = Authority::configured(db, settings);
        auth.ensure_signing_key().await?;
        Ok(auth)
    }

    /// The `[auth]` settings in use.
    pub fn settings(&self) -> &AuthSettings {
        &self.cfg
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    async fn vault<T: Send + 'static>(
        &self,
        f: impl FnOnce(&KeyVault) -> Result<T, AuthError> + Send + 'static,
    ) -> Result<T, AuthError> {
        let vault = self.vault.clone();
        tokio::task::spawn_blocking(move || f(&vault))
            .await
            .map_err(|e| AuthError::Internal(format!("the secrets store task stopped: {e}")))?
    }

    /// Makes a first signing key when there is no current one; returns the
    /// current key id.
    pub async fn ensure_signing_key(&self) -> Result<String, AuthError> {
        if let Some(row) = auth_store::list_keys(&self.db).await?.into_iter().find(|k| k.retired_at.is_none()) {
            return Ok(row.kid);
        }
        let key = SigningKey::generate()?;
        let stored = key.clone();
        self.vault(move |v| v.put(&stored)).await?;
        if auth_store::insert_first_key(&self.db, &key.key_row(self.now())).await? {
            tracing::info!(kid = key.kid(), "made the first access-token signing key");
            Ok(key.kid().to_string())
        } else {
            // another process made one at the same moment: use theirs
            let kid = key.kid().to_string();
            self.vault(move |v| v.remove(&kid)).await?;
            let row = auth_store::list_keys(&self.db).await?.into_iter().find(|k| k.retired_at.is_none());
            row.map(|r| r.kid).ok_or_else(|| AuthError::Internal("no current signing key after making one".into()))
        }
    }

    /// Makes a new current signing key (`dc-host auth rotate-key`): the
    /// previous keys verify for `auth.key_grace_secs` more, keys retired
    /// longer ago are deleted, and the private halves of retired keys are
    /// removed from the secrets store.
    pub async fn rotate_key(&self) -> Result<KeyRotation, AuthError> {
        let now = self.now();
        let before = auth_store::list_keys(&self.db).await?;
        let key = SigningKey::generate()?;
        let stored = key.clone();
        self.vault(move |v| v.put(&stored)).await?;
        auth_store::rotate_key(&self.db, &key.key_row(now), now).await?;
        let retired = before.iter().filter(|k| k.retired_at.is_none()).map(|k| k.kid.clone()).collect();
        let dropped = auth_store::delete_keys_retired_before(&self.db, now - secs(self.cfg.key_grace_secs)).await?;
        let kid = key.kid().to_string();
        let keep = kid.clone();
        self.vault(move |v| v.retain(&[keep.as_str()]).map(|_| ())).await?;
        // refresh tokens that expired a day ago are refused anyway: drop them
        auth_store::purge_refresh_tokens(&self.db, now - TimeDelta::days(1)).await?;
        self.cache.write().unwrap_or_else(std::sync::PoisonError::into_inner).loaded_at = None;
        tracing::info!(%kid, ?retired, ?dropped, "rotated the access-token signing key");
        Ok(KeyRotation { kid, retired, dropped })
    }

    /// Reloads the verification keys when the cache is older than
    /// [`KEY_CACHE_SECS`], or (with `unknown`) older than
    /// [`UNKNOWN_KID_RELOAD_SECS`]; returns the key set.
    async fn key_set(&self, unknown: bool) -> Result<Arc<KeySet>, AuthError> {
        let now = self.now();
        {
            let cache = self.cache.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            let max_age = TimeDelta::seconds(if unknown { UNKNOWN_KID_RELOAD_SECS } else { KEY_CACHE_SECS });
            if let Some(at) = cache.loaded_at
                && now - at < max_age
                && now >= at
            {
                return Ok(cache.set.clone());
            }
        }
        let rows = auth_store::list_keys(&self.db).await?;
        let set = Arc::new(KeySet::from_rows(&rows, Duration::from_secs(self.cfg.key_grace_secs))?);
        let mut cache = self.cache.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.set = set.clone();
        cache.loaded_at = Some(now);
        Ok(set)
    }

    /// The current signing key, read fresh from the database (issuing is rare
    /// and rate-limited), its private half from the secrets store (cached).
    async fn signing_key(&self) -> Result<SigningKey, AuthError> {
        let current = auth_store::list_keys(&self.db).await?.into_iter().find(|k| k.retired_at.is_none());
        let Some(row) = current else {
            return Err(AuthError::Unavailable(
                "there is no access-token signing key: run `dc-host auth rotate-key` to make one".into(),
            ));
        };
        if let Some(k) = &self.cache.read().unwrap_or_else(std::sync::PoisonError::into_inner).signing
            && k.kid() == row.kid
        {
            return Ok(k.clone());
        }
        let kid = row.kid.clone();
        let key = self.vault(move |v| v.get(&kid)).await?.ok_or_else(|| {
            AuthError::Unavailable(format!(
                "the private half of the current signing key {} is not in this host's secrets store: \
                 use the secrets store of the host that made it (secrets.json and its key), or run \
                 `dc-host auth rotate-key` on this host",
                row.kid
            ))
        })?;
        self.cache.write().unwrap_or_else(std::sync::PoisonError::into_inner).signing = Some(key.clone());
        Ok(key)
    }

    /// Signs an access token for `sub`; the response carries `refresh` (a
    /// refresh token already stored) when given.
    async fn issue(
        &self,
        sub: &str,
        kind: SubjectKind,
        role: Role,
        refresh: Option<String>,
    ) -> Result<TokenResponse, GrantError> {
        let now = self.now();
        let key = self.signing_key().await?;
        let claims = Claims {
            sub: sub.to_string(),
            kind,
            role,
            iss: self.cfg.issuer.clone(),
            aud: self.cfg.audience.clone(),
            exp: (now + secs(self.cfg.access_ttl_secs)).timestamp(),
            nbf: now.timestamp(),
            iat: now.timestamp(),
            jti: uuid::Uuid::new_v4().simple().to_string(),
        };
        Ok(TokenResponse {
            access_token: key.sign(&claims)?,
            token_type: "Bearer",
            expires_in: self.cfg.access_ttl_secs,
            refresh_token: refresh,
            subject: sub.to_string(),
            role,
        })
    }

    fn new_refresh(&self) -> Result<(String, NewRefreshToken), AuthError> {
        let now = self.now();
        let token = password::random_token()?;
        let row = NewRefreshToken {
            id: uuid::Uuid::new_v4().simple().to_string(),
            token_hash: password::token_hash(&token),
            issued_at: now,
            expires_at: now + secs(self.cfg.refresh_ttl_secs),
        };
        Ok((token, row))
    }

    /// The password grant: a person's name and password.
    pub async fn password_grant(&self, username: &str, password: &str) -> Result<TokenResponse, GrantError> {
        let now_read = self.now();
        let user = auth_store::get_user(&self.db, username).await?;
        // what is kept of this user is refreshed: a change made elsewhere applies now
        self.keep_subject(
            SubjectKind::User,
            username,
            user.as_ref().map(|u| (u.role, u.disabled, u.created_at)),
            now_read,
        );
        // a missing user is verified against the dummy hash: same time, same answer
        let hash = user.as_ref().map(|u| u.password_hash.clone()).unwrap_or_else(|| password::dummy_hash().into());
        let given = password.to_string();
        let matches = tokio::task::spawn_blocking(move || password::verify(&given, &hash))
            .await
            .map_err(|e| AuthError::Internal(format!("password check stopped: {e}")))?;
        let user = match user {
            Some(u) if matches && !u.disabled => u,
            other => {
                let reason = match other {
                    None => "no such user",
                    Some(u) if u.disabled => "user disabled",
                    Some(_) => "wrong password",
                };
                tracing::info!(user = username, reason, "password grant refused");
                return Err(GrantError::InvalidGrant("wrong user name or password".into()));
            }
        };
        let (token, row) = self.new_refresh()?;
        let family = uuid::Uuid::new_v4().simple().to_string();
        auth_store::insert_refresh_token(&self.db, &row, &family, SubjectKind::User, &user.name).await?;
        self.issue(&user.name, SubjectKind::User, user.role, Some(token)).await
    }

    /// The client-credentials grant: a service's id and secret.
    pub async fn client_credentials_grant(
        &self,
        client_id: &str,
        client_secret: &str,
    ) -> Result<TokenResponse, GrantError> {
        let now_read = self.now();
        let client = auth_store::get_client(&self.db, client_id).await?;
        let hash = client.as_ref().map(|c| c.secret_hash.clone()).unwrap_or_else(|| password::dummy_hash().into());
        let given = client_secret.to_string();
        let matches = tokio::task::spawn_blocking(move || password::verify(&given, &hash))
            .await
            .map_err(|e| AuthError::Internal(format!("secret check stopped: {e}")))?;
        if let Some(c) = &client {
            self.keep_subject(SubjectKind::Client, &c.client_id, Some((c.role, c.disabled, c.created_at)), now_read);
        }
        match client {
            Some(c) if matches && !c.disabled => self.issue(&c.client_id, SubjectKind::Client, c.role, None).await,
            _ => {
                tracing::info!(client_id, "client credentials refused");
                Err(GrantError::InvalidClient("unknown client or wrong client secret".into()))
            }
        }
    }

    /// The refresh-token grant: rotates the token (one use each) and issues a
    /// new access token with the subject's current role.
    pub async fn refresh_grant(&self, refresh_token: &str) -> Result<TokenResponse, GrantError> {
        self.refresh_grant_of(refresh_token).await.0
    }

    /// [`Authority::refresh_grant`], and the subject the token was issued to
    /// whenever the token is known (refused ones included), for the audit log.
    pub async fn refresh_grant_of(&self, refresh_token: &str) -> (Result<TokenResponse, GrantError>, Option<String>) {
        let (token, next) = match self.new_refresh() {
            Ok(t) => t,
            Err(e) => return (Err(e.into()), None),
        };
        let hash = password::token_hash(refresh_token);
        let rotation = match auth_store::rotate_refresh_token(&self.db, &hash, &next, self.now()).await {
            Ok(r) => r,
            Err(e) => return (Err(e.into()), None),
        };
        let refused = |subject: String, why: &str| (Err(GrantError::InvalidGrant(why.to_string())), Some(subject));
        match rotation {
            Rotation::Rotated { subject, kind, family_id } => {
                let result = match self.subject_role(kind, &subject, None, false).await {
                    Ok(Ok(role)) => self.issue(&subject, kind, role, Some(token)).await,
                    Ok(Err(why)) => match auth_store::revoke_family(&self.db, &family_id, self.now()).await {
                        Ok(()) => Err(GrantError::InvalidGrant(format!("the refresh token is no longer valid: {why}"))),
                        Err(e) => Err(e.into()),
                    },
                    Err(e) => Err(e.into()),
                };
                (result, Some(subject))
            }
            Rotation::Reused { subject, family_id } => {
                tracing::warn!(%subject, %family_id, "a used refresh token was presented again: revoked its family");
                refused(
                    subject,
                    "the refresh token was already used; every token issued with it is now revoked: log in again",
                )
            }
            Rotation::Revoked { subject } => refused(subject, "the refresh token was revoked: log in again"),
            Rotation::Expired { subject } => refused(subject, "the refresh token has expired: log in again"),
            Rotation::Unknown => (Err(GrantError::InvalidGrant("unknown refresh token".into())), None),
        }
    }

    /// RFC 7009 revocation: a refresh token revokes its whole family; an
    /// unknown token is not an error (the spec's answer is 200 either way);
    /// an access token cannot be revoked (it expires on its own).
    pub async fn revoke(&self, token: &str, hint: Option<&str>) -> Result<(), GrantError> {
        if auth_store::revoke_refresh_token(&self.db, &password::token_hash(token), self.now()).await? {
            return Ok(());
        }
        if hint == Some("access_token") || token.split('.').count() == 3 {
            return Err(GrantError::UnsupportedTokenType(format!(
                "access tokens cannot be revoked: they expire within {} s; disable or remove the user or client to refuse them now",
                self.cfg.access_ttl_secs
            )));
        }
        Ok(())
    }

    /// The current role of a subject, or why it may not act (`Ok(Err(…))`).
    /// With `issued_at`, a token issued before the subject was created is
    /// refused (the name was removed and added again; clocks may differ by
    /// [`crate::jwt::LEEWAY_SECS`]).
    /// With `kept`, what was read of the subject less than
    /// `auth.subject_cache_secs` ago may answer; otherwise it is read now.
    async fn subject_role(
        &self,
        kind: SubjectKind,
        subject: &str,
        issued_at: Option<i64>,
        kept: bool,
    ) -> Result<Result<Role, &'static str>, AuthError> {
        let row = self.subject_state(kind, subject, kept).await?;
        Ok(match row {
            None => Err("its subject was removed"),
            Some((_, true, _)) => Err("its subject is disabled"),
            Some((_, _, created))
                if issued_at.is_some_and(|iat| iat + crate::jwt::LEEWAY_SECS < created.timestamp()) =>
            {
                Err("it was issued before its subject was created")
            }
            Some((role, _, _)) => Ok(role),
        })
    }

    /// The subject's row: what was kept (with `kept`, when read less than
    /// `auth.subject_cache_secs` ago by the clock), else read now and kept.
    async fn subject_state(&self, kind: SubjectKind, subject: &str, kept: bool) -> Result<SubjectState, AuthError> {
        let now = self.now();
        let ttl = secs(self.cfg.subject_cache_secs);
        if kept
            && ttl > TimeDelta::zero()
            && let Some(k) = self.subjects.get(&SubjectRef(kind, subject))
            && now >= k.read_at
            && now - k.read_at < ttl
        {
            return Ok(k.state);
        }
        let state = match kind {
            SubjectKind::User => {
                auth_store::get_user(&self.db, subject).await?.map(|u| (u.role, u.disabled, u.created_at))
            }
            SubjectKind::Client => {
                auth_store::get_client(&self.db, subject).await?.map(|c| (c.role, c.disabled, c.created_at))
            }
        };
        self.keep_subject(kind, subject, state, now);
        Ok(state)
    }

    /// Keeps `state`, read at `read_at`, as what is known of the subject.
    fn keep_subject(&self, kind: SubjectKind, subject: &str, state: SubjectState, read_at: DateTime<Utc>) {
        if self.cfg.subject_cache_secs > 0 {
            self.subjects.insert((kind, subject.to_string()), KeptSubject { state, read_at });
        }
    }

    /// Verifies a bearer access token and returns who it stands for.
    pub async fn verify(&self, bearer: &str) -> Result<Principal, AuthFailure> {
        let unavailable = |e: AuthError| {
            tracing::error!(error = %e, "cannot verify a bearer token");
            AuthFailure("the token cannot be checked right now: try again later".into())
        };
        let now = self.now();
        let mut keys = self.key_set(false).await.map_err(unavailable)?;
        let digest: [u8; 32] = Sha256::digest(bearer.as_bytes()).into();
        let token = match self.tokens.get(&digest) {
            // verified before: only what can change since is checked again
            Some(t) if keys.contains(&t.kid) => {
                if let Err(e) = keys.recheck(&t.kid, t.exp, t.nbf, now) {
                    self.tokens.remove(&digest);
                    return Err(AuthFailure(e.to_string()));
                }
                t
            }
            _ => {
                let kid = jsonwebtoken::decode_header(bearer).ok().and_then(|h| h.kid);
                if let Some(kid) = &kid
                    && !keys.contains(kid)
                {
                    keys = self.key_set(true).await.map_err(unavailable)?;
                }
                let claims = keys
                    .verify(bearer, &self.cfg.issuer, &self.cfg.audience, now)
                    .map_err(|e| AuthFailure(e.to_string()))?;
                let t = Arc::new(VerifiedToken {
                    // verify refuses a token without a kid
                    kid: kid.unwrap_or_default(),
                    sub: claims.sub,
                    kind: claims.kind,
                    iat: claims.iat,
                    exp: claims.exp,
                    nbf: claims.nbf,
                });
                self.tokens.insert(digest, t.clone());
                t
            }
        };
        match self.subject_role(token.kind, &token.sub, Some(token.iat), true).await.map_err(unavailable)? {
            Ok(role) => Ok(Principal { subject: token.sub.clone(), role }),
            Err(why) => Err(AuthFailure(format!("the token is no longer valid: {why}"))),
        }
    }
}

/// The key of a kept subject borrowed from a token, so that looking a
/// subject up allocates nothing: it hashes as the owned key
/// `(SubjectKind, String)` does (the kind, then the name as `str`).
#[derive(Hash)]
struct SubjectRef<'a>(SubjectKind, &'a str);

impl quick_cache::Equivalent<(SubjectKind, String)> for SubjectRef<'_> {
    fn equivalent(&self, key: &(SubjectKind, String)) -> bool {
        self.0 == key.0 && self.1 == key.1
    }
}

impl Authenticate for Authority {
    fn authenticate<'a>(
        &'a self,
        bearer: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Principal, AuthFailure>> + Send + 'a>> {
        Box::pin(self.verify(bearer))
    }
}

#[cfg(test)]
mod subject_ref_tests {
    use super::*;

    #[test]
    fn a_kept_subject_is_found_by_its_borrowed_key() {
        let c = quick_cache::sync::Cache::<(SubjectKind, String), u8>::new(4);
        c.insert((SubjectKind::User, "ada".to_string()), 1);
        c.insert((SubjectKind::Client, "ada".to_string()), 2);
        assert_eq!(c.get(&SubjectRef(SubjectKind::User, "ada")), Some(1));
        assert_eq!(c.get(&SubjectRef(SubjectKind::Client, "ada")), Some(2));
        assert_eq!(c.get(&SubjectRef(SubjectKind::User, "otto")), None);
    }
}
