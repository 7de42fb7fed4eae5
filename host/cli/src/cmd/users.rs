//! `dc-host users`: the people who may use the control plane (OAuth2 password
//! grant). Passwords are read from stdin (`--password-stdin`), so they never
//! appear in shell history or the process list; only their argon2id hashes
//! are stored (`dc_auth::accounts`).

use std::io::Read;
use std::process::ExitCode;

use clap::Subcommand;
use dc_auth::accounts;
use dc_core::access::Role;
use dc_runtime::HostEnv;

use crate::output;

/// User commands.
#[derive(Subcommand)]
pub enum UsersCommand {
    /// Add a user; the password is read from stdin.
    Add {
        /// Login name: letters, digits, '.', '_', '@', '-'.
        name: String,
        /// viewer (reads), operator (also sends commands) or admin (also
        /// manages plugins, users and clients).
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Read the password from stdin (required: passwords are never arguments).
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users (never their passwords or hashes).
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Set a user's password (read from stdin); its refresh tokens are revoked.
    Passwd {
        /// Login name.
        name: String,
        /// Read the password from stdin (required).
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove a user; its refresh tokens are revoked and its access tokens refused.
    Rm {
        /// Login name.
        name: String,
    },
    /// Disable a user: no new tokens, its refresh tokens revoked, its access tokens refused.
    Disable {
        /// Login name.
        name: String,
    },
    /// Enable a disabled user again.
    Enable {
        /// Login name.
        name: String,
    },
}

/// Parses a role name for clap.
pub fn parse_role(s: &str) -> Result<Role, String> {
    Role::try_from(s.to_string())
}

/// Reads a password from stdin (one trailing newline is not part of it).
fn read_password(password_stdin: bool) -> anyhow::Result<String> {
    if !password_stdin {
        anyhow::bail!(
            "give the password on stdin with --password-stdin, e.g. `printf '%s' \"$PW\" | dc-host users add NAME --role viewer --password-stdin`"
        );
    }
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text)?;
    let password = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
    if password.is_empty() {
        anyhow::bail!("no password on stdin: pipe the password into the command");
    }
    Ok(password.to_string())
}

pub async fn exec(c: UsersCommand, env: &HostEnv) -> anyhow::Result<ExitCode> {
    let db = &env.db;
    match c {
        UsersCommand::Add { name, role, password_stdin } => {
            let password = read_password(password_stdin)?;
            accounts::add_user(db, &name, role, &password).await?;
            println!("user {name} added with role {role}");
        }
        UsersCommand::List { json } => {
            let users = accounts::list_users(db).await?;
            if json {
                output::json(&users)?;
            } else if users.is_empty() {
                println!("no users yet: add one with `dc-host users add NAME --role admin --password-stdin`");
            } else {
                let rows: Vec<Vec<String>> = users
                    .iter()
                    .map(|u| {
                        vec![
                            u.name.clone(),
                            u.role.to_string(),
                            if u.disabled { "disabled" } else { "enabled" }.into(),
                            output::ts(Some(u.created_at)),
                            output::ts(Some(u.updated_at)),
                        ]
                    })
                    .collect();
                output::table(&["NAME", "ROLE", "STATE", "CREATED", "UPDATED"], &rows);
            }
        }
        UsersCommand::Passwd { name, password_stdin } => {
            let password = read_password(password_stdin)?;
            accounts::set_password(db, &name, &password).await?;
            println!("password of user {name} changed; its refresh tokens are revoked");
        }
        UsersCommand::Rm { name } => {
            accounts::remove_user(db, &name).await?;
            println!("user {name} removed; its tokens are refused from now on");
        }
        UsersCommand::Disable { name } => {
            accounts::set_user_disabled(db, &name, true).await?;
            println!("user {name} disabled; its tokens are refused from now on");
        }
        UsersCommand::Enable { name } => {
            accounts::set_user_disabled(db, &name, false).await?;
            println!("user {name} enabled");
        }
    }
    Ok(ExitCode::SUCCESS)
}
