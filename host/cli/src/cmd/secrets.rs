//! `dc-host secrets`: the encrypted secrets store (AES-256-GCM, file under the
//! data directory, key from `DC_SECRETS_KEY` or a key file). Opening the store
//! and resolving `${secret:NAME}` references in settings live in
//! `dc_core::secrets`.
//!
//! `set` and `rm` open the store with
//! [`secrets::open_configured_store_for_update`], which holds the store's
//! exclusive lock from before reading it until the change is written, so
//! parallel commands never overwrite each other; `rotate-key` holds it through
//! the whole rotation; `get` and `list` read under the shared lock.

use std::io::Read;
use std::process::ExitCode;

use clap::Subcommand;
use dc_core::Settings;
use dc_core::secrets;

use crate::output;

/// Secrets commands.
#[derive(Subcommand)]
pub enum SecretsCommand {
    /// Store a secret; the value is read from stdin (so it never lands in shell history).
    Set {
        /// Secret name: letters, digits, '_', '.', '-'.
        name: String,
    },
    /// Print a secret's value.
    Get {
        /// Secret name.
        name: String,
    },
    /// List secret names (never values).
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Delete a secret.
    Rm {
        /// Secret name.
        name: String,
    },
    /// Generate a new key and re-encrypt every secret with it (key file only).
    RotateKey,
}

pub fn exec(c: SecretsCommand, settings: &Settings) -> anyhow::Result<ExitCode> {
    match c {
        SecretsCommand::Set { name } => {
            let mut value = String::new();
            std::io::stdin().read_to_string(&mut value)?;
            let value = value.strip_suffix('\n').unwrap_or(&value);
            // stdin is read first: the lock is never held while waiting for input
            let mut store = secrets::open_configured_store_for_update(settings)?;
            store.set(&name, value)?;
            println!("secret {name} stored in {}", store.path().display());
        }
        SecretsCommand::Get { name } => println!("{}", secrets::open_configured_store(settings)?.get(&name)?),
        SecretsCommand::List { json } => {
            let store = secrets::open_configured_store(settings)?;
            let names = store.names();
            if json {
                output::json(&names)?;
            } else {
                let rows: Vec<Vec<String>> =
                    names.iter().map(|n| vec![n.clone(), output::ts(store.updated_at(n))]).collect();
                output::table(&["NAME", "UPDATED"], &rows);
            }
        }
        SecretsCommand::Rm { name } => {
            if secrets::open_configured_store_for_update(settings)?.remove(&name)? {
                println!("secret {name} removed");
            } else {
                println!("no secret {name}");
                return Ok(ExitCode::from(1));
            }
        }
        SecretsCommand::RotateKey => {
            if std::env::var_os(secrets::KEY_ENV_VAR).is_some() {
                anyhow::bail!(
                    "the key comes from {}; rotate-key only rotates the key file: unset {} or re-encrypt with a new value yourself",
                    secrets::KEY_ENV_VAR,
                    secrets::KEY_ENV_VAR
                );
            }
            let key = settings.secrets_key_file();
            let new = secrets::rotate_key_files(&settings.secrets_file(), &key)?;
            println!("key rotated: new key id {}, written to {}", new.key_id(), key.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
