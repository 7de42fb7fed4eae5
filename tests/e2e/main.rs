//! End-to-end tests: the real `dc-host` binary, real plugin cdylibs built by
//! cargo, the fixture site on loopback, SQLite and a real PostgreSQL server.

mod api;
mod apps;
mod auth;
mod boundaries;
mod broker;
mod cli;
mod compat;
mod crash;
mod crawl;
mod demo;
mod email;
mod evolve;
mod network;
mod refusals;
mod reload;
mod resume;
mod scaffold;
mod secrets;
mod serve;
mod storage;
mod supervision;
