//! Where the private halves of the signing keys live: the encrypted secrets
//! store (`dc_core::secrets`), as `dc-auth.signing.<kid>`, never the
//! database. The database holds only the public halves (`dc_auth_keys`), so
//! every host sharing the database verifies tokens, while signing needs the
//! secrets store that holds the current key (hosts that issue tokens share
//! it, as they share the store for `${secret:…}` references).

use std::path::PathBuf;

use dc_core::Settings;
use dc_core::secrets::{self, SecretsError};

use crate::AuthError;
use crate::jwt::SigningKey;

/// Prefix of the secret names that hold private signing keys.
pub const SECRET_PREFIX: &str = "dc-auth.signing.";

/// The secrets store that keeps the private signing keys.
#[derive(Debug, Clone)]
pub struct KeyVault {
    store: PathBuf,
    key_file: PathBuf,
    env_key: Option<String>,
}

impl KeyVault {
    /// The store the settings configure, with the key from `DC_SECRETS_KEY`
    /// or the key file.
    pub fn configured(settings: &Settings) -> KeyVault {
        KeyVault {
            store: settings.secrets_file(),
            key_file: settings.secrets_key_file(),
            env_key: std::env::var(secrets::KEY_ENV_VAR).ok(),
        }
    }

    /// A store at explicit paths (tests).
    pub fn at(store: PathBuf, key_file: PathBuf, env_key: Option<String>) -> KeyVault {
        KeyVault { store, key_file, env_key }
    }

    fn name(kid: &str) -> String {
        format!("{SECRET_PREFIX}{kid}")
    }

    /// The private key `kid`, or None when this store does not hold it.
    pub fn get(&self, kid: &str) -> Result<Option<SigningKey>, AuthError> {
        let store = secrets::open_store(&self.store, &self.key_file, self.env_key.as_deref()).map_err(vault_err)?;
        match store.get(&Self::name(kid)) {
            Ok(text) => SigningKey::from_base64(kid, &text).map(Some),
            Err(SecretsError::NotFound { .. }) => Ok(None),
            Err(e) => Err(vault_err(e)),
        }
    }

    /// Stores a private key.
    pub fn put(&self, key: &SigningKey) -> Result<(), AuthError> {
        let mut store =
            secrets::open_store_for_update(&self.store, &self.key_file, self.env_key.as_deref()).map_err(vault_err)?;
        store.set(&Self::name(key.kid()), &key.to_base64()).map_err(vault_err)
    }

    /// Removes the private key `kid`, if this store holds it.
    pub fn remove(&self, kid: &str) -> Result<(), AuthError> {
        let mut store =
            secrets::open_store_for_update(&self.store, &self.key_file, self.env_key.as_deref()).map_err(vault_err)?;
        store.remove(&Self::name(kid)).map(|_| ()).map_err(vault_err)
    }

    /// Removes the private keys of every key id not in `keep`; returns the
    /// removed key ids.
    pub fn retain(&self, keep: &[&str]) -> Result<Vec<String>, AuthError> {
        let mut store =
            secrets::open_store_for_update(&self.store, &self.key_file, self.env_key.as_deref()).map_err(vault_err)?;
        let mut removed = Vec::new();
        for name in store.names() {
            if let Some(kid) = name.strip_prefix(SECRET_PREFIX)
                && !keep.contains(&kid)
            {
                store.remove(&name).map_err(vault_err)?;
                removed.push(kid.to_string());
            }
        }
        Ok(removed)
    }
}

fn vault_err(e: SecretsError) -> AuthError {
    AuthError::Unavailable(format!("cannot use the secrets store that holds the signing keys: {e}"))
}
