//! Integration tests of the dc-core data layer, every test body written once
//! and run on BOTH backends: SQLite (a file in a temp dir) and PostgreSQL (a
//! scratch database per test on 127.0.0.1:5432, dropped afterwards).
//!
//! PostgreSQL tests FAIL (never skip) when the server is unreachable; start it
//! with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`.
//! Another admin URL can be given in `DC_TEST_PG_ADMIN_URL`.
//!
//! Tests that need separate OS processes (concurrent writers, crash safety)
//! re-invoke this test binary with `--exact <child test> --ignored` and an
//! environment variable telling the ignored child test what to do.

#![allow(clippy::unwrap_used)]

/// For each named `async fn name(t: &TestDb)`, generates a module `name` with
/// the tests `sqlite` and `postgres` that run the body on a fresh, migrated
/// database of that backend.
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let t = crate::common::TestDb::sqlite().await;
                super::$name(&t).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let t = crate::common::TestDb::postgres().await;
                super::$name(&t).await;
            }
        }
    )+};
}

mod audit;
mod common;
mod connect;
mod delete_app;
mod integrity;
mod logs;
mod merge;
mod procs;
mod proxies;
mod schema;
mod shared;
mod stage;
