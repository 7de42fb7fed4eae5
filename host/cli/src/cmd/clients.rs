//! `dc-host clients`: services that use the control plane (OAuth2 client
//! credentials grant). A client's id and secret are generated and printed
//! once, when it is added; only the secret's argon2id hash is stored
//! (`dc_auth::accounts`).

use std::process::ExitCode;

use clap::Subcommand;
use dc_auth::accounts;
use dc_core::access::Role;
use dc_runtime::HostEnv;

use crate::cmd::users::parse_role;
use crate::output;

/// Client commands.
#[derive(Subcommand)]
pub enum ClientsCommand {
    /// Add a client; prints its client id and secret (shown only this once).
    Add {
        /// The client's name: letters, digits, '.', '_', '@', '-'.
        name: String,
        /// viewer, operator or admin.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// JSON output (name, client_id, client_secret, role).
        #[arg(long)]
        json: bool,
    },
    /// List clients (never their secrets or hashes).
    List {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Remove a client; its tokens are refused from now on.
    Rm {
        /// The client's name.
        name: String,
    },
}

pub async fn exec(c: ClientsCommand, env: &HostEnv) -> anyhow::Result<ExitCode> {
    let db = &env.db;
    match c {
        ClientsCommand::Add { name, role, json } => {
            let client = accounts::add_client(db, &name, role).await?;
            if json {
                output::json(&client)?;
            } else {
                println!("client {name} added with role {role}");
                println!("client_id:     {}", client.client_id);
                println!("client_secret: {}", client.client_secret);
                println!("the secret is shown only this once: store it now (dc-host keeps only its hash)");
            }
        }
        ClientsCommand::List { json } => {
            let clients = accounts::list_clients(db).await?;
            if json {
                output::json(&clients)?;
            } else if clients.is_empty() {
                println!("no clients yet: add one with `dc-host clients add NAME --role viewer`");
            } else {
                let rows: Vec<Vec<String>> = clients
                    .iter()
                    .map(|c| {
                        vec![
                            c.name.clone(),
                            c.client_id.clone(),
                            c.role.to_string(),
                            if c.disabled { "disabled" } else { "enabled" }.into(),
                            output::ts(Some(c.created_at)),
                        ]
                    })
                    .collect();
                output::table(&["NAME", "CLIENT ID", "ROLE", "STATE", "CREATED"], &rows);
            }
        }
        ClientsCommand::Rm { name } => {
            let id = accounts::remove_client(db, &name).await?;
            println!("client {name} ({id}) removed; its tokens are refused from now on");
        }
    }
    Ok(ExitCode::SUCCESS)
}
