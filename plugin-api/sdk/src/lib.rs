//! The crate a dc-host plugin depends on: implement [`Scraper`], describe the
//! plugin with a [`Manifest`] built from its constructors, and export it with
//! [`export_plugin!`]. [`Context`] is the host (HTTP, merge, logs, progress,
//! arguments, stop flag, crawl frontier, CAPTCHA solving and other named host
//! calls); [`html`] parses pages; `testing::TestHost` (cargo
//! feature `testing`, for a plugin's `[dev-dependencies]`) runs a plugin
//! in-process in `cargo test`, checking what the host checks.
//!
//! The SDK changes at its own pace. What crosses into the host is the
//! version-checked interface crate `dc-plugin-api` underneath (re-exported as
//! [`interface`]); see `docs/plugin-abi.md`. A plugin needs no `abi_stable` line
//! of its own: [`export_plugin!`] reaches it through this crate.
//!
//! Invariant: neither this crate nor `dc-plugin-api` depends on tokio, sqlx,
//! lapin or axum (a check in the test suite fails if one does), and no type of
//! a third-party crate is part of this crate's public API except `serde_json`'s
//! values, so a dependency's release is never our breaking change.
#![deny(missing_docs)]
#![allow(unsafe_code)] // the abi_stable derives and the export header; see export.rs

pub mod export;
pub mod html;
pub mod sdk;
#[cfg(feature = "testing")]
pub mod testing;

pub use dc_plugin_api as interface;
pub use dc_plugin_api::capability;
pub use dc_plugin_api::{
    CaptchaSolution, CaptchaTask, ColumnDecl, ColumnType, CrawlLimits, EnqueueAnswer, Manifest, MergeSummary,
    MissingRows, PluginKind, Schedule, SessionConfig, SnapshotMode, TableDecl,
};
pub use dc_plugin_api::{ErrorClass, ProxyExit, ProxyVerdict, SessionAuth};
pub use sdk::{Context, Error, LogLevel, Record, Request, Response, Result, Scraper, StoreFn};
pub use serde_json::{self, Map, Value, json};

#[doc(hidden)]
pub use abi_stable;

/// The version of this SDK, recorded in every plugin's manifest as `sdk_version`.
pub const SDK_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The major interface version (what a manifest's `interface_version` holds).
pub const INTERFACE_VERSION: u32 = dc_plugin_api::INTERFACE_VERSION;
