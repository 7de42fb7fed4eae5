//! The one crate a dc-host plugin links against: the stable ABI (`abi`), the
//! manifest a plugin declares (`manifest`), and the author SDK (`sdk`, `html`,
//! `testing`) that lets a plugin be written in plain Rust.
//!
//! A plugin author implements [`Scraper`] and exports it with
//! [`export_plugin!`]; everything that crosses the library boundary is handled
//! here. See `docs/plugin-abi.md` for the versioning policy.
//!
//! Invariant: this crate never depends on tokio, sqlx, lapin or axum (a check in
//! the test suite fails if it does), so a plugin stays small and host internals can
//! change without breaking plugins.
#![deny(missing_docs)]
#![allow(unsafe_code)] // the abi_stable derives expand to unsafe impls; no hand-written unsafe here

pub mod abi;
pub mod html;
pub mod manifest;
pub mod sdk;
pub mod testing;

pub use manifest::{ColumnDecl, ColumnType, Manifest, MissingRows, PluginKind, Schedule, SnapshotMode, TableDecl};
pub use sdk::{Context, Error, LogLevel, MergeSummary, Record, Request, Response, Result, Scraper, SessionConfig};
pub use serde_json::{self, Map, Value, json};

#[doc(hidden)]
pub use abi_stable;

/// The interface version this crate implements. A plugin declares it in its
/// manifest and the host refuses a plugin whose major version differs.
pub const INTERFACE_VERSION: u32 = 1;

/// The version of this crate (`dc-plugin-api`), which abi_stable checks at load.
pub const API_CRATE_VERSION: &str = env!("CARGO_PKG_VERSION");
