//! `dc-host secrets`: the encrypted secrets store (AES-256-GCM, file under the
//! data directory, key from `DC_SECRETS_KEY` or a key file), and the resolution
//! of `${secret:NAME}` references in settings.
//!
//! `set` and `rm` open the store with [`secrets::open_store_for_update`], which
//! holds the store's exclusive lock from before reading it until the change is
//! written, so parallel commands never overwrite each other; `rotate-key` holds
//! it through the whole rotation; `get` and `list` read under the shared lock.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use dc_core::Settings;
use dc_core::secrets::{self, SecretStore};

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

fn paths(settings: &Settings) -> (PathBuf, PathBuf) {
    let dir = &settings.general.data_dir;
    (dir.join("secrets.json"), dir.join("secrets.key"))
}

/// Opens the store to read it.
fn open(settings: &Settings) -> anyhow::Result<SecretStore> {
    let (store, key) = paths(settings);
    let env_key = std::env::var(secrets::KEY_ENV_VAR).ok();
    Ok(secrets::open_store(&store, &key, env_key.as_deref())?)
}

/// Opens the store to change it: holds the exclusive lock until dropped.
fn open_for_update(settings: &Settings) -> anyhow::Result<SecretStore> {
    let (store, key) = paths(settings);
    let env_key = std::env::var(secrets::KEY_ENV_VAR).ok();
    Ok(secrets::open_store_for_update(&store, &key, env_key.as_deref())?)
}

/// Replaces `${secret:NAME}` references in the settings that may hold secrets.
pub fn resolve_setting_references(settings: &mut Settings) -> anyhow::Result<()> {
    let needs = |v: &Option<String>| v.as_deref().is_some_and(|s| s.contains("${secret:"));
    if !needs(&settings.database.url) && !needs(&settings.logging.splunk_token) {
        return Ok(());
    }
    let store = open(settings)?;
    for v in [&mut settings.database.url, &mut settings.logging.splunk_token] {
        if let Some(text) = v.as_mut() {
            *text = secrets::resolve_references(text, &store)?;
        }
    }
    Ok(())
}

pub fn exec(c: SecretsCommand, settings: &Settings) -> anyhow::Result<ExitCode> {
    match c {
        SecretsCommand::Set { name } => {
            let mut value = String::new();
            std::io::stdin().read_to_string(&mut value)?;
            let value = value.strip_suffix('\n').unwrap_or(&value);
            // stdin is read first: the lock is never held while waiting for input
            let mut store = open_for_update(settings)?;
            store.set(&name, value)?;
            println!("secret {name} stored in {}", store.path().display());
        }
        SecretsCommand::Get { name } => println!("{}", open(settings)?.get(&name)?),
        SecretsCommand::List { json } => {
            let store = open(settings)?;
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
            if open_for_update(settings)?.remove(&name)? {
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
            let (store, key) = paths(settings);
            let new = secrets::rotate_key_files(&store, &key)?;
            println!("key rotated: new key id {}, written to {}", new.key_id(), key.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
