//! Integration tests of the dc-runtime library: registration, reload and
//! rollback of real plugin files (`registry`), how supervised runs end
//! (`supervisor`) and what a run's merges write through the host callbacks
//! (`callbacks`). They call the library API directly, with real components:
//! the misbehave fixture plugin built by cargo, the real `dc-host` binary as
//! probe and worker process, and a real database.
//!
//! Every test body is written once and runs on BOTH backends: SQLite (a file
//! in a temp dir) and PostgreSQL (a scratch database per test on
//! 127.0.0.1:5432, dropped afterwards). PostgreSQL tests FAIL (never skip) when
//! the server is unreachable; start it with
//! `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`.
//! Another admin URL can be given in `DC_TEST_PG_ADMIN_URL`.
//!
//! Tests wait on events (the plugin's `ready_fifo` named pipe, process exits),
//! never on the clock; [`common::LIMIT`] only bounds a broken test.

#![allow(clippy::unwrap_used)]

/// For each named `async fn name(t: &TestEnv)`, generates a module `name` with
/// the tests `sqlite` and `postgres` that run the body against a fresh,
/// migrated database of that backend.
macro_rules! both_backends {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let t = crate::common::TestEnv::sqlite().await;
                super::$name(&t).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let t = crate::common::TestEnv::postgres().await;
                super::$name(&t).await;
            }
        }
    )+};
}

mod callbacks;
mod common;
mod registry;
mod supervisor;
