//! dc-api integration tests: a real server on loopback, real HTTP (reqwest),
//! a real database (SQLite; PostgreSQL where marked).

mod access;
mod apps;
mod audit;
mod common;
mod dashboard;
mod errors;
mod listings;
mod openapi;
mod plugins;
mod stream;
