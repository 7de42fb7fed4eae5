//! `dc-host interface`: the plugin interface this host implements — its
//! version, the range of plugin builds it loads and the capabilities it offers —
//! so an operator can tell before registering whether a plugin will load.

use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use crate::output;

/// Arguments of `interface`.
#[derive(Args)]
pub struct InterfaceArgs {
    /// JSON output.
    #[arg(long)]
    json: bool,
}

/// What `interface` reports.
#[derive(Serialize)]
struct InterfaceInfo {
    /// dc-host's own version.
    host_version: &'static str,
    /// The dc-plugin-api version this host was built against.
    interface_version: &'static str,
    /// Plugin builds against these interface versions load (`1.0 – 1.1`).
    loads: String,
    /// The capabilities this host implements (`captcha` only with a
    /// `[captcha]` provider configured).
    capabilities: Vec<&'static str>,
    /// Capabilities the interface defines that this host does not implement yet.
    not_implemented: Vec<&'static str>,
}

/// What a host with `settings` offers; without settings (`--version`, read
/// before any configuration), the capabilities every host offers.
fn info(settings: Option<&dc_core::Settings>) -> InterfaceInfo {
    let capabilities =
        settings.map(dc_runtime::host_capabilities).unwrap_or_else(|| dc_runtime::HOST_CAPABILITIES.to_vec());
    InterfaceInfo {
        host_version: env!("CARGO_PKG_VERSION"),
        interface_version: dc_plugin_api::ABI_VERSION,
        loads: dc_plugin_api::supported_range(),
        not_implemented: dc_plugin_api::capability::KNOWN
            .iter()
            .copied()
            .filter(|c| !capabilities.contains(c))
            .collect(),
        capabilities,
    }
}

/// The text `dc-host --version` prints after the program name.
pub fn version_text() -> String {
    let i = info(None);
    format!(
        "{} (plugin interface {}; loads plugins built against {}; capabilities: {})",
        i.host_version,
        i.interface_version,
        i.loads,
        i.capabilities.join(", ")
    )
}

pub fn exec(a: InterfaceArgs, settings: &dc_core::Settings) -> anyhow::Result<ExitCode> {
    let i = info(Some(settings));
    if a.json {
        output::json(&i)?;
    } else {
        println!("plugin interface:  dc-plugin-api {}", i.interface_version);
        println!("loads plugins:     built against {}", i.loads);
        println!("capabilities:      {}", i.capabilities.join(", "));
        if !i.not_implemented.is_empty() {
            println!("not yet offered:   {}", i.not_implemented.join(", "));
        }
    }
    Ok(ExitCode::SUCCESS)
}
