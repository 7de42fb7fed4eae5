//! End-to-end tests: the real `dc-host` binary, real plugin cdylibs built by
//! cargo, the fixture site on loopback, SQLite and a real PostgreSQL server.

mod api;
mod apps;
mod auth;
mod boundaries;
mod broker;
mod captcha;
mod cli;
mod compat;
mod crash;
mod crawl;
mod dashboard;
mod demo;
mod email;
mod evolve;
mod http_options;
mod limiter;
mod metrics;
mod network;
mod proxies;
mod refusals;
mod reload;
mod resume;
mod scaffold;
mod schemathesis;
mod secrets;
mod serve;
mod shared;
mod storage;
mod stream;
mod supervision;
