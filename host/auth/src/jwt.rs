//! Access tokens: JWTs signed with Ed25519 (`alg` `EdDSA`, pinned: a token
//! with any other `alg`, `none` included, is refused before its signature is
//! looked at, so an HS256 token "signed" with a public key never verifies).
//!
//! Every token names its signing key in the `kid` header. A [`KeySet`] holds
//! the public keys that verify: the current key, and keys a rotation retired
//! less than the grace period ago. Time checks (`exp`, `nbf`, the grace
//! period) use the `now` the caller passes, so they are tested with an
//! injected clock; `exp` and `nbf` allow [`LEEWAY_SECS`] of clock skew.
//! `iss` and `aud` must equal the configured issuer and audience.

use std::collections::HashMap;

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use dc_core::access::Role;
use dc_core::auth_store::{KeyRow, SubjectKind};
use jsonwebtoken::errors::ErrorKind as JwtKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::AuthError;

/// The one algorithm dc-auth signs with and accepts.
pub const ALGORITHM: Algorithm = Algorithm::EdDSA;
/// The name stored in `dc_auth_keys.algorithm`.
pub const ALGORITHM_NAME: &str = "EdDSA";
/// Clock skew allowed on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: i64 = 30;

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user name or client id.
    pub sub: String,
    /// Whether `sub` is a user or a client (`user`, `client`).
    pub kind: SubjectKind,
    /// The subject's role when the token was issued.
    pub role: Role,
    /// Issuer (`auth.issuer`).
    pub iss: String,
    /// Audience (`auth.audience`).
    pub aud: String,
    /// Expiry (seconds since the epoch).
    pub exp: i64,
    /// Not valid before (seconds since the epoch).
    pub nbf: i64,
    /// Issued at (seconds since the epoch).
    pub iat: i64,
    /// Unique token id.
    pub jti: String,
}

/// Why a token was refused. The messages are safe to show the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not three base64url parts with a JSON header, or an unknown `alg`.
    #[error("the bearer token is not a valid JWT")]
    Malformed,
    /// Signed with another algorithm than the pinned one.
    #[error("the token's algorithm {0} is not accepted: tokens must be signed with EdDSA")]
    Algorithm(String),
    /// No `kid` header.
    #[error("the token names no signing key (kid)")]
    MissingKid,
    /// A `kid` that no known key has.
    #[error("the token's signing key {0} is unknown")]
    UnknownKid(String),
    /// A `kid` of a key retired longer ago than the grace period.
    #[error("the token's signing key {0} was replaced and is no longer accepted: get a new token")]
    KeyRetired(String),
    /// The signature does not match.
    #[error("the token's signature is invalid")]
    Signature,
    /// Past `exp`.
    #[error("the token has expired: get a new one")]
    Expired,
    /// Before `nbf`.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// Another issuer.
    #[error("the token was issued by another issuer")]
    Issuer,
    /// Another audience.
    #[error("the token is meant for another audience")]
    Audience,
    /// A required claim is missing or has the wrong type.
    #[error("the token lacks a required claim or has a malformed one")]
    Claims,
}

/// An Ed25519 signing key: the private key (PKCS#8) and its key id. `Debug`
/// shows only the key id.
#[derive(Clone)]
pub struct SigningKey {
    kid: String,
    pkcs8: Vec<u8>,
    public: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new random key; its key id is derived from the public key.
    pub fn generate() -> Result<SigningKey, AuthError> {
        let pair = Ed25519KeyPair::generate()
            .map_err(|_| AuthError::Internal("cannot generate an Ed25519 signing key".into()))?;
        let pkcs8 = pair
            .to_pkcs8()
            .map_err(|_| AuthError::Internal("cannot encode the Ed25519 signing key".into()))?
            .as_ref()
            .to_vec();
        let public = pair.public_key().as_ref().to_vec();
        let kid = hex::encode(&Sha256::digest(&public)[..8]);
        Ok(SigningKey { kid, pkcs8, public })
    }

    /// The key stored as standard base64 of its PKCS#8 document
    /// ([`SigningKey::to_base64`]) under key id `kid`.
    pub fn from_base64(kid: &str, text: &str) -> Result<SigningKey, AuthError> {
        let bad = || AuthError::Internal(format!("the stored private half of signing key {kid} is not a valid key"));
        let pkcs8 = STANDARD.decode(text.trim()).map_err(|_| bad())?;
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| bad())?;
        let public = pair.public_key().as_ref().to_vec();
        Ok(SigningKey { kid: kid.to_string(), pkcs8, public })
    }

    /// The private key as standard base64 of its PKCS#8 document (what the
    /// secrets store keeps).
    pub fn to_base64(&self) -> String {
        STANDARD.encode(&self.pkcs8)
    }

    /// The key id (the JWT `kid`).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as base64url without padding (what the database keeps).
    pub fn public_base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(&self.public)
    }

    /// The database row of the public half.
    pub fn key_row(&self, created_at: DateTime<Utc>) -> KeyRow {
        KeyRow {
            kid: self.kid.clone(),
            algorithm: ALGORITHM_NAME.into(),
            public_key: self.public_base64url(),
            created_at,
            retired_at: None,
        }
    }

    /// Signs `claims` into a JWT with this key's `kid`.
    pub fn sign(&self, claims: &Claims) -> Result<String, AuthError> {
        let mut header = Header::new(ALGORITHM);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(&self.pkcs8))
            .map_err(|e| AuthError::Internal(format!("cannot sign an access token: {e}")))
    }
}

/// A public key that verifies tokens, and when it was retired.
#[derive(Clone)]
struct VerifyingKey {
    key: DecodingKey,
    retired_at: Option<DateTime<Utc>>,
}

/// The public keys that may verify tokens, by key id.
#[derive(Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, VerifyingKey>,
    grace: chrono::TimeDelta,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet").field("kids", &self.keys.keys().collect::<Vec<_>>()).finish()
    }
}

impl KeySet {
    /// The keys of `rows` (rows of other algorithms are skipped); a retired
    /// key verifies until `grace` after its retirement.
    pub fn from_rows(rows: &[KeyRow], grace: std::time::Duration) -> Result<KeySet, AuthError> {
        let mut keys = HashMap::new();
        for row in rows.iter().filter(|r| r.algorithm == ALGORITHM_NAME) {
            let public = URL_SAFE_NO_PAD.decode(&row.public_key).map_err(|_| {
                AuthError::Internal(format!(
                    "the public key of signing key {} in dc_auth_keys is not base64url",
                    row.kid
                ))
            })?;
            keys.insert(
                row.kid.clone(),
                VerifyingKey { key: DecodingKey::from_ed_der(&public), retired_at: row.retired_at },
            );
        }
        let grace = chrono::TimeDelta::from_std(grace).unwrap_or(chrono::TimeDelta::MAX);
        Ok(KeySet { keys, grace })
    }

    /// Whether a key with this id is known.
    pub fn contains(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// Verifies `token` at `now`: the pinned algorithm, a known key that is
    /// current or within its grace period, the signature, `iss`, `aud`, `exp`
    /// and `nbf` (with [`LEEWAY_SECS`]).
    pub fn verify(&self, token: &str, issuer: &str, audience: &str, now: DateTime<Utc>) -> Result<Claims, JwtError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Malformed)?;
        if header.alg != ALGORITHM {
            return Err(JwtError::Algorithm(format!("{:?}", header.alg)));
        }
        let kid = header.kid.ok_or(JwtError::MissingKid)?;
        let key = self.usable_key(&kid, now)?;
        let mut validation = Validation::new(ALGORITHM);
        // exp and nbf are checked below against the injected clock
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        let data = jsonwebtoken::decode::<Claims>(token, &key.key, &validation).map_err(|e| match e.kind() {
            JwtKind::InvalidSignature => JwtError::Signature,
            JwtKind::InvalidIssuer => JwtError::Issuer,
            JwtKind::InvalidAudience => JwtError::Audience,
            JwtKind::InvalidAlgorithm => JwtError::Algorithm(format!("{:?}", header.alg)),
            JwtKind::MissingRequiredClaim(_) | JwtKind::InvalidClaimFormat(_) | JwtKind::Json(_) => JwtError::Claims,
            _ => JwtError::Malformed,
        })?;
        let claims = data.claims;
        check_times(claims.exp, claims.nbf, now)?;
        Ok(claims)
    }

    /// The key `kid` when it may verify at `now`: known, and current or
    /// within its grace period.
    fn usable_key(&self, kid: &str, now: DateTime<Utc>) -> Result<&VerifyingKey, JwtError> {
        let key = self.keys.get(kid).ok_or_else(|| JwtError::UnknownKid(kid.to_string()))?;
        if let Some(retired) = key.retired_at
            && now >= retired + self.grace
        {
            return Err(JwtError::KeyRetired(kid.to_string()));
        }
        Ok(key)
    }

    /// The checks of [`KeySet::verify`] that depend on the time and on this
    /// key set, for a token whose signature, algorithm, `iss` and `aud` were
    /// verified before (what a cache of verified tokens must repeat): its key
    /// `kid` may still verify at `now`, and `exp` and `nbf` hold at `now`.
    pub fn recheck(&self, kid: &str, exp: i64, nbf: i64, now: DateTime<Utc>) -> Result<(), JwtError> {
        self.usable_key(kid, now)?;
        check_times(exp, nbf, now)
    }
}

/// `exp` and `nbf` at `now`, with [`LEEWAY_SECS`].
fn check_times(exp: i64, nbf: i64, now: DateTime<Utc>) -> Result<(), JwtError> {
    let now = now.timestamp();
    if exp + LEEWAY_SECS <= now {
        return Err(JwtError::Expired);
    }
    if nbf - LEEWAY_SECS > now {
        return Err(JwtError::NotYetValid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use chrono::TimeDelta;

    use super::*;

    const ISS: &str = "dc-host";
    const AUD: &str = "dc-host-api";

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn claims(now: DateTime<Utc>, ttl: i64) -> Claims {
        Claims {
            sub: "alice".into(),
            kind: SubjectKind::User,
            role: Role::Operator,
            iss: ISS.into(),
            aud: AUD.into(),
            exp: now.timestamp() + ttl,
            nbf: now.timestamp(),
            iat: now.timestamp(),
            jti: "j1".into(),
        }
    }

    fn set(keys: &[(&SigningKey, Option<DateTime<Utc>>)], grace_secs: u64) -> KeySet {
        let rows: Vec<KeyRow> = keys
            .iter()
            .map(|(k, retired)| KeyRow { retired_at: *retired, ..k.key_row(at("2026-01-01T00:00:00Z")) })
            .collect();
        KeySet::from_rows(&rows, Duration::from_secs(grace_secs)).unwrap()
    }

    fn b64(v: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    #[test]
    fn a_token_verifies_until_it_expires_and_not_before_nbf() {
        let now = at("2026-03-01T12:00:00Z");
        let key = SigningKey::generate().unwrap();
        let keys = set(&[(&key, None)], 3600);
        let token = key.sign(&claims(now, 900)).unwrap();
        assert_eq!(keys.verify(&token, ISS, AUD, now).unwrap(), claims(now, 900));
        // within the leeway after exp, then refused
        let exp = now + TimeDelta::seconds(900);
        assert!(keys.verify(&token, ISS, AUD, exp + TimeDelta::seconds(LEEWAY_SECS - 1)).is_ok());
        assert_eq!(keys.verify(&token, ISS, AUD, exp + TimeDelta::seconds(LEEWAY_SECS)), Err(JwtError::Expired));
        // nbf in the future (beyond the leeway)
        let later = now + TimeDelta::seconds(120);
        let early = key.sign(&Claims { nbf: later.timestamp(), ..claims(now, 900) }).unwrap();
        assert_eq!(keys.verify(&early, ISS, AUD, now), Err(JwtError::NotYetValid));
        assert!(keys.verify(&early, ISS, AUD, later - TimeDelta::seconds(LEEWAY_SECS)).is_ok());
    }

    #[test]
    fn wrong_issuer_audience_or_signature_is_refused() {
        let now = at("2026-03-01T12:00:00Z");
        let key = SigningKey::generate().unwrap();
        let keys = set(&[(&key, None)], 3600);
        let token = key.sign(&claims(now, 900)).unwrap();
        assert_eq!(keys.verify(&token, "someone-else", AUD, now), Err(JwtError::Issuer));
        assert_eq!(keys.verify(&token, ISS, "other-api", now), Err(JwtError::Audience));
        // another key that claims this key's kid
        let forger = SigningKey::generate().unwrap();
        let forged = SigningKey { kid: key.kid.clone(), ..forger }.sign(&claims(now, 900)).unwrap();
        assert_eq!(keys.verify(&forged, ISS, AUD, now), Err(JwtError::Signature));
        // a changed payload under the original signature
        let parts: Vec<&str> = token.split('.').collect();
        let mut c = serde_json::to_value(claims(now, 900)).unwrap();
        c["role"] = "admin".into();
        let tampered = format!("{}.{}.{}", parts[0], b64(&c), parts[2]);
        assert_eq!(keys.verify(&tampered, ISS, AUD, now), Err(JwtError::Signature));
        assert_eq!(keys.verify("not a jwt", ISS, AUD, now), Err(JwtError::Malformed));
        // a claim missing
        let mut c = serde_json::to_value(claims(now, 900)).unwrap();
        c.as_object_mut().unwrap().remove("nbf");
        let token = jsonwebtoken::encode(
            &Header { kid: Some(key.kid.clone()), ..Header::new(ALGORITHM) },
            &c,
            &EncodingKey::from_ed_der(&key.pkcs8),
        )
        .unwrap();
        assert_eq!(keys.verify(&token, ISS, AUD, now), Err(JwtError::Claims));
    }

    #[test]
    fn other_algorithms_none_and_hs256_with_the_public_key_are_refused() {
        let now = at("2026-03-01T12:00:00Z");
        let key = SigningKey::generate().unwrap();
        let keys = set(&[(&key, None)], 3600);
        let payload = b64(&serde_json::to_value(claims(now, 900)).unwrap());
        // alg none, no signature
        let none = format!("{}.{payload}.", b64(&serde_json::json!({"alg": "none", "typ": "JWT", "kid": key.kid})));
        assert_eq!(keys.verify(&none, ISS, AUD, now), Err(JwtError::Malformed));
        // HS256 with the (public) verification key as the HMAC secret: the
        // classic algorithm-confusion forgery
        let hs = jsonwebtoken::encode(
            &Header { kid: Some(key.kid.clone()), ..Header::new(Algorithm::HS256) },
            &claims(now, 900),
            &EncodingKey::from_secret(&key.public),
        )
        .unwrap();
        assert_eq!(keys.verify(&hs, ISS, AUD, now), Err(JwtError::Algorithm("HS256".into())));
        let hs = jsonwebtoken::encode(
            &Header { kid: Some(key.kid.clone()), ..Header::new(Algorithm::HS256) },
            &claims(now, 900),
            &EncodingKey::from_secret(key.public_base64url().as_bytes()),
        )
        .unwrap();
        assert!(matches!(keys.verify(&hs, ISS, AUD, now), Err(JwtError::Algorithm(_))));
    }

    #[test]
    fn unknown_and_missing_key_ids_are_refused() {
        let now = at("2026-03-01T12:00:00Z");
        let key = SigningKey::generate().unwrap();
        let other = SigningKey::generate().unwrap();
        let keys = set(&[(&key, None)], 3600);
        let token = other.sign(&claims(now, 900)).unwrap();
        assert_eq!(keys.verify(&token, ISS, AUD, now), Err(JwtError::UnknownKid(other.kid.clone())));
        let no_kid =
            jsonwebtoken::encode(&Header::new(ALGORITHM), &claims(now, 900), &EncodingKey::from_ed_der(&key.pkcs8))
                .unwrap();
        assert_eq!(keys.verify(&no_kid, ISS, AUD, now), Err(JwtError::MissingKid));
    }

    #[test]
    fn a_rotated_key_verifies_within_its_grace_period_and_not_after() {
        let rotated = at("2026-03-01T12:00:00Z");
        let old = SigningKey::generate().unwrap();
        let new = SigningKey::generate().unwrap();
        let keys = set(&[(&old, Some(rotated)), (&new, None)], 3600);
        // signed just before the rotation, a day-long token
        let token = old.sign(&claims(rotated - TimeDelta::seconds(1), 86_400)).unwrap();
        assert!(keys.verify(&token, ISS, AUD, rotated + TimeDelta::seconds(3599)).is_ok());
        assert_eq!(
            keys.verify(&token, ISS, AUD, rotated + TimeDelta::seconds(3600)),
            Err(JwtError::KeyRetired(old.kid.clone()))
        );
        // the new key verifies its own tokens whenever they are valid
        let fresh = new.sign(&claims(rotated + TimeDelta::seconds(7200), 900)).unwrap();
        assert!(keys.verify(&fresh, ISS, AUD, rotated + TimeDelta::seconds(7200)).is_ok());
    }

    #[test]
    fn a_stored_private_key_round_trips() {
        let key = SigningKey::generate().unwrap();
        let back = SigningKey::from_base64(&key.kid, &key.to_base64()).unwrap();
        assert_eq!(back.public, key.public);
        assert!(format!("{key:?}").contains(&key.kid) && !format!("{key:?}").contains(&key.to_base64()));
        assert!(SigningKey::from_base64("k", "bm90IGEga2V5").is_err());
    }
}
