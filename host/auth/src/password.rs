//! Credentials: argon2id hashes (the `argon2` crate's recommended parameters,
//! PHC strings) of passwords and client secrets, the random values dc-auth
//! hands out (client ids and secrets, refresh tokens) and the SHA-256 under
//! which refresh tokens are stored.
//!
//! Verifying a credential of a subject that does not exist still runs one
//! argon2id verification, against [`dummy_hash`], so a failed login takes
//! the same time whether or not the name exists.

use std::sync::LazyLock;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

use crate::AuthError;

/// The shortest password accepted.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// The longest password accepted, in bytes (argon2 hashes any length; this
/// bounds the work one request can ask for).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Hashes `secret` with argon2id and a fresh random salt; returns the PHC
/// string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`).
pub fn hash(secret: &str) -> Result<String, AuthError> {
    Argon2::default()
        .hash_password(secret.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Internal(format!("cannot hash a credential: {e}")))
}

/// True when `secret` matches the PHC string `phc`. A malformed PHC string
/// never matches (and still costs one verification, against the dummy hash).
pub fn verify(secret: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default().verify_password(secret.as_bytes(), &parsed).is_ok(),
        Err(_) => {
            burn(secret);
            false
        }
    }
}

/// Spends the time of one verification and fails: for a subject that does
/// not exist or cannot log in, so its failure takes as long as a wrong
/// password.
pub fn burn(secret: &str) {
    if let Ok(parsed) = PasswordHash::new(dummy_hash()) {
        let _ = Argon2::default().verify_password(secret.as_bytes(), &parsed);
    }
}

/// The hash of a random password nobody knows, made once per process with the
/// same parameters as every other hash.
pub fn dummy_hash() -> &'static str {
    static DUMMY: LazyLock<String> = LazyLock::new(|| {
        let random = random_token().unwrap_or_else(|_| "dc-auth dummy password".into());
        hash(&random).unwrap_or_default()
    });
    &DUMMY
}

/// Checks a new password: at least [`MIN_PASSWORD_CHARS`] characters, at most
/// [`MAX_PASSWORD_BYTES`] bytes.
pub fn check_new_password(password: &str) -> Result<(), AuthError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(AuthError::Invalid(format!(
            "the password is too short: use at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(AuthError::Invalid(format!("the password is too long: use at most {MAX_PASSWORD_BYTES} bytes")));
    }
    Ok(())
}

/// `n` random bytes from the operating system.
fn random_bytes<const N: usize>() -> Result<[u8; N], AuthError> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf)
        .map_err(|e| AuthError::Internal(format!("cannot get random bytes from the operating system: {e}")))?;
    Ok(buf)
}

/// A random 256-bit value as base64url without padding (43 characters): a
/// refresh token or a client secret.
pub fn random_token() -> Result<String, AuthError> {
    Ok(URL_SAFE_NO_PAD.encode(random_bytes::<32>()?))
}

/// A new client id: `dcc_` and 20 random hex digits.
pub fn new_client_id() -> Result<String, AuthError> {
    Ok(format!("dcc_{}", hex::encode(random_bytes::<10>()?)))
}

/// How a refresh token is stored: the hex SHA-256 of the token. The token is
/// 256 random bits, so a fast hash is enough (nothing to brute-force).
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn hashes_are_argon2id_phc_strings_that_verify_only_the_secret() {
        let h = hash("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$v=19$"), "{h}");
        assert!(!h.contains("correct horse"));
        assert!(verify("correct horse", &h));
        assert!(!verify("correct horsf", &h));
        assert_ne!(hash("correct horse").unwrap(), h, "a fresh salt per hash");
        assert!(!verify("x", "not a phc string"));
        assert!(dummy_hash().starts_with("$argon2id$"));
    }

    #[test]
    fn new_passwords_are_checked_and_random_values_differ() {
        assert!(check_new_password("short").unwrap_err().to_string().contains("at least 8 characters"));
        check_new_password("eight ch").unwrap();
        assert!(check_new_password(&"x".repeat(2000)).is_err());
        let (a, b) = (random_token().unwrap(), random_token().unwrap());
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert_eq!(token_hash(&a).len(), 64);
        assert!(new_client_id().unwrap().starts_with("dcc_"));
    }
}
