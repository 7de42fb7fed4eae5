//! dc-core: what every other host crate builds on — settings, the shared enums,
//! the database and its migrations, the app and run registries, the SHA merge,
//! logging sinks, the secrets store and the SQL of the crates above it
//! (`auth_store` for dc-auth, `proxy_store` for dc-proxy, `audit` for dc-api). Only this crate knows SQL.

// lets `#[fun_watch]` (which names `::dc_core`) be used inside this crate
extern crate self as dc_core;

pub mod access;
pub mod apps;
pub mod audit;
pub mod auth_store;
pub mod clock;
pub mod db;
pub mod enums;
pub mod error;
pub mod evolve;
pub mod feed;
pub mod fun_watch;
pub mod hash;
pub mod hosts;
pub mod ids;
pub mod logs;
pub mod merge;
pub mod proxy_store;
pub mod retention;
pub mod run_items;
pub mod runs;
pub mod secrets;
pub mod settings;
pub mod splunk;
pub mod stage;

pub use db::{Backend, Database, DbError, WriteTx};
pub use error::ErrorKind;
pub use ids::{AppId, RuntimeId};
pub use settings::Settings;
