//! `dc-host audit`: the control plane's audit log (who changed what through
//! the REST API or the token endpoint, when, from where), newest first.

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::Subcommand;
use dc_core::audit::{self, AuditQuery};
use dc_runtime::HostEnv;

use crate::output;

/// Audit-log commands.
#[derive(Subcommand)]
pub enum AuditCommand {
    /// The newest audit entries (state-changing API requests and token requests).
    List {
        /// Only entries of this user name or client id.
        #[arg(long)]
        subject: Option<String>,
        /// Only entries at or after this time (RFC 3339, e.g. 2026-11-26T08:00:00Z).
        #[arg(long)]
        since: Option<DateTime<Utc>>,
        /// Only entries before this time (RFC 3339).
        #[arg(long)]
        until: Option<DateTime<Utc>>,
        /// At most this many entries.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=100_000))]
        limit: i64,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

pub async fn exec(c: AuditCommand, env: &HostEnv) -> anyhow::Result<ExitCode> {
    match c {
        AuditCommand::List { subject, since, until, limit, json } => {
            if let (Some(s), Some(u)) = (since, until)
                && s >= u
            {
                anyhow::bail!("--since must be before --until");
            }
            let q = AuditQuery { subject, since, until, before_id: None, limit };
            let list = audit::page(&env.db, &q).await?;
            if json {
                output::json(&list)?;
            } else if list.is_empty() {
                println!(
                    "no audit entries (state-changing API requests are recorded once `dc-host serve` serves the API)"
                );
            } else {
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|e| {
                        vec![
                            output::ts(Some(e.at)),
                            e.subject.clone().unwrap_or_else(|| "-".into()),
                            e.role.clone().unwrap_or_else(|| "-".into()),
                            format!("{} {}", e.method, e.route),
                            e.target.clone().unwrap_or_else(|| "-".into()),
                            e.status.to_string(),
                            e.client_addr.clone().unwrap_or_else(|| "-".into()),
                            e.request_id.clone().unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect();
                output::table(&["AT", "SUBJECT", "ROLE", "REQUEST", "TARGET", "STATUS", "FROM", "REQUEST ID"], &rows);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
