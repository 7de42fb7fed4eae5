//! `dc-host schedule preview`: the next fire times of a cron expression, so an
//! operator can check an expression (and its time zone, across DST changes)
//! before setting it with `dc-host apps schedule`.

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::Subcommand;
use dc_scheduler::Schedule;

use crate::output;

/// Schedule commands.
#[derive(Subcommand)]
pub enum ScheduleCommand {
    /// Print the next fire times of a cron expression.
    Preview {
        /// A cron expression: 5 fields (or 6 with leading seconds), names, ranges, steps, @daily…
        expr: String,
        /// Start from this instant (RFC 3339; default now).
        #[arg(long, value_name = "RFC3339")]
        from: Option<String>,
        /// Time zone (IANA name, e.g. Europe/Berlin; default UTC).
        #[arg(long, value_name = "ZONE")]
        tz: Option<String>,
        /// How many fire times.
        #[arg(long, default_value_t = 10)]
        count: usize,
        /// JSON output: an array of RFC 3339 times with offsets.
        #[arg(long)]
        json: bool,
    },
}

pub fn exec(c: ScheduleCommand) -> anyhow::Result<ExitCode> {
    match c {
        ScheduleCommand::Preview { expr, from, tz, count, json } => {
            let schedule = Schedule::cron(&expr, tz.as_deref())?;
            let from = match from {
                Some(f) => DateTime::parse_from_rfc3339(&f)
                    .map_err(|e| {
                        anyhow::anyhow!("--from {f:?} is not an RFC 3339 time like 2026-03-29T00:00:00+01:00: {e}")
                    })?
                    .with_timezone(&Utc),
                None => Utc::now(),
            };
            let times: Vec<String> = schedule.upcoming(from, count.min(1000)).iter().map(|t| t.to_rfc3339()).collect();
            if json {
                output::json(&times)?;
            } else {
                if times.is_empty() {
                    println!("{expr:?} never fires after {}", from.to_rfc3339());
                }
                for t in &times {
                    println!("{t}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
