//! Users (people) and clients (services): adding, listing, changing passwords
//! and removing, for `dc-host users …` / `dc-host clients …` and the REST
//! API. Passwords and client secrets are hashed with argon2id before they
//! reach the database; a client's secret is returned once, when it is made.
//! Removing a subject (or changing a user's password, or disabling it)
//! revokes its refresh tokens in the same transaction.

use chrono::Utc;
use dc_core::Database;
use dc_core::access::Role;
use dc_core::auth_store::{self, ClientRow, UserRow};
use serde::Serialize;

use crate::AuthError;
use crate::password;

const MAX_NAME_LEN: usize = 64;

/// Checks a user or client name: 1-64 characters from letters, digits, `.`,
/// `_`, `@` and `-`, starting with a letter or digit.
pub fn check_name(what: &str, name: &str) -> Result<(), AuthError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'@' | b'-'));
    if ok {
        Ok(())
    } else {
        let shown: String = name.chars().take(MAX_NAME_LEN).collect();
        Err(AuthError::Invalid(format!(
            "invalid {what} name {shown:?}: use 1-{MAX_NAME_LEN} letters, digits, '.', '_', '@' or '-', starting with a letter or digit"
        )))
    }
}

async fn hash_blocking(secret: String) -> Result<String, AuthError> {
    tokio::task::spawn_blocking(move || password::hash(&secret))
        .await
        .map_err(|e| AuthError::Internal(format!("hashing stopped: {e}")))?
}

/// Adds a user with `role` and `password`.
pub async fn add_user(db: &Database, name: &str, role: Role, password: &str) -> Result<(), AuthError> {
    check_name("user", name)?;
    password::check_new_password(password)?;
    let hash = hash_blocking(password.to_string()).await?;
    if auth_store::add_user(db, name, role, &hash, Utc::now()).await? {
        Ok(())
    } else {
        Err(AuthError::Conflict(format!(
            "user {name} already exists: change its password with `dc-host users passwd {name} --password-stdin` or remove it first"
        )))
    }
}

/// Every user, by name (never their password hashes: they are not serialized).
pub async fn list_users(db: &Database) -> Result<Vec<UserRow>, AuthError> {
    Ok(auth_store::list_users(db).await?)
}

fn no_user(name: &str) -> AuthError {
    AuthError::NotFound(format!("no user {name}: list the users with `dc-host users list`"))
}

/// Sets a user's password and revokes its refresh tokens (its sessions).
pub async fn set_password(db: &Database, name: &str, password: &str) -> Result<(), AuthError> {
    password::check_new_password(password)?;
    if auth_store::get_user(db, name).await?.is_none() {
        return Err(no_user(name));
    }
    let hash = hash_blocking(password.to_string()).await?;
    if auth_store::set_user_password(db, name, &hash, Utc::now()).await? { Ok(()) } else { Err(no_user(name)) }
}

/// Disables (or enables) a user: a disabled user gets no tokens, its refresh
/// tokens are revoked and its access tokens are refused from the next request.
pub async fn set_user_disabled(db: &Database, name: &str, disabled: bool) -> Result<(), AuthError> {
    if auth_store::set_user_disabled(db, name, disabled, Utc::now()).await? { Ok(()) } else { Err(no_user(name)) }
}

/// Removes a user and revokes its refresh tokens.
pub async fn remove_user(db: &Database, name: &str) -> Result<(), AuthError> {
    if auth_store::remove_user(db, name, Utc::now()).await? { Ok(()) } else { Err(no_user(name)) }
}

/// A client just made: its id and its secret, shown once.
#[derive(Debug, Clone, Serialize)]
pub struct NewClient {
    /// The client's name.
    pub name: String,
    /// The id it authenticates with.
    pub client_id: String,
    /// The secret it authenticates with; only its hash is stored.
    pub client_secret: String,
    /// Its role.
    pub role: Role,
}

/// Adds a client with `role` and a new random id and secret.
pub async fn add_client(db: &Database, name: &str, role: Role) -> Result<NewClient, AuthError> {
    check_name("client", name)?;
    let client_id = password::new_client_id()?;
    let client_secret = password::random_token()?;
    let hash = hash_blocking(client_secret.clone()).await?;
    if auth_store::add_client(db, &client_id, name, role, &hash, Utc::now()).await? {
        Ok(NewClient { name: name.to_string(), client_id, client_secret, role })
    } else {
        Err(AuthError::Conflict(format!(
            "client {name} already exists: remove it with `dc-host clients rm {name}` first to make a new secret"
        )))
    }
}

/// Every client, by name (never their secret hashes).
pub async fn list_clients(db: &Database) -> Result<Vec<ClientRow>, AuthError> {
    Ok(auth_store::list_clients(db).await?)
}

/// Removes the client called `name` and revokes its tokens; returns its id.
pub async fn remove_client(db: &Database, name: &str) -> Result<String, AuthError> {
    auth_store::remove_client(db, name, Utc::now())
        .await?
        .ok_or_else(|| AuthError::NotFound(format!("no client {name}: list the clients with `dc-host clients list`")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["alice", "ci-bot", "a.b_c@example.org", "7"] {
            assert!(check_name("user", good).is_ok(), "{good}");
        }
        for bad in ["", "-alice", "al ice", "al/ice", "ålice", &"a".repeat(65)] {
            let e = check_name("user", bad).expect_err(bad).to_string();
            assert!(e.starts_with("invalid user name") && e.contains("letters, digits"), "{e}");
        }
    }
}
