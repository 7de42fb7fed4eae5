//! One module per `dc-host` subcommand.

pub mod apps;
pub mod audit;
pub mod auth;
pub mod broker;
pub mod clients;
pub mod config;
pub mod data;
pub mod db;
pub mod hosts;
pub mod interface;
pub mod plugins;
pub mod reload;
pub mod run;
pub mod runs;
pub mod scaffold;
pub mod schedule;
pub mod secrets;
pub mod serve;
pub mod users;
