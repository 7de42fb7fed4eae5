//! dc-core: what every other host crate builds on — settings, the shared enums,
//! the database and its migrations, the app and run registries, the SHA merge,
//! logging sinks and the secrets store. Only this crate knows SQL.

pub mod apps;
pub mod db;
pub mod enums;
pub mod fun_watch;
pub mod hash;
pub mod logs;
pub mod merge;
pub mod runs;
pub mod secrets;
pub mod settings;

pub use db::{Backend, Database, DbError};
pub use settings::Settings;
