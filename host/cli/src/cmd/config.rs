//! `dc-host config show`: the effective configuration with secrets redacted.

use std::process::ExitCode;

use clap::Subcommand;
use dc_core::Settings;

/// Configuration commands.
#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Print the effective configuration (file + DC_* overrides + defaults) as TOML.
    Show,
}

pub fn exec(c: ConfigCommand, settings: &Settings) -> anyhow::Result<ExitCode> {
    match c {
        ConfigCommand::Show => print!("{}", settings.to_redacted_toml()),
    }
    Ok(ExitCode::SUCCESS)
}
