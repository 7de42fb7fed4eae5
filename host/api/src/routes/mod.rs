//! The handlers, one module per resource. Each only translates HTTP to the
//! library functions the CLI uses and their answers to the API's JSON types.

pub mod apps;
pub mod audit;
pub mod events;
pub mod health;
pub mod hosts;
pub mod logs;
pub mod plugins;
pub mod runs;
