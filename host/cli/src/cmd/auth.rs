//! `dc-host auth`: the token authority's signing keys. `rotate-key` makes a
//! new Ed25519 key current (its private half goes to the secrets store, its
//! public half to the database); tokens signed with the previous key keep
//! verifying for `auth.key_grace_secs`, keys retired longer ago are deleted.

use std::process::ExitCode;

use clap::Subcommand;
use dc_auth::Authority;
use dc_runtime::HostEnv;

use crate::output;

/// Token-authority commands.
#[derive(Subcommand)]
pub enum AuthCommand {
    /// Make a new access-token signing key current; the previous one verifies
    /// for auth.key_grace_secs more.
    RotateKey {
        /// JSON output (kid, retired, dropped).
        #[arg(long)]
        json: bool,
    },
}

pub async fn exec(c: AuthCommand, env: &HostEnv) -> anyhow::Result<ExitCode> {
    match c {
        AuthCommand::RotateKey { json } => {
            let auth = Authority::configured(env.db.clone(), &env.settings);
            let r = auth.rotate_key().await?;
            if json {
                output::json(&r)?;
            } else {
                println!("new signing key {} is current", r.kid);
                if !r.retired.is_empty() {
                    println!(
                        "retired {}: tokens they signed verify for {} s more",
                        r.retired.join(", "),
                        env.settings.auth.key_grace_secs
                    );
                }
                if !r.dropped.is_empty() {
                    println!("dropped {} (grace period over)", r.dropped.join(", "));
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
