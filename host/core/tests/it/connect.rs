//! Connection failures name the (redacted) URL and say what to check.

use dc_core::{Database, DbError, Settings};

fn quick() -> Settings {
    let mut s = Settings::default();
    s.database.connect_timeout_secs = 3;
    s
}

#[tokio::test]
async fn unreachable_postgres_names_url_and_says_to_check_server() {
    let url = "postgres://postgres@127.0.0.1:1/x";
    let err = Database::connect_url(url, &quick()).await.expect_err("nothing listens on port 1");
    assert!(matches!(err, DbError::Connect { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(url), "{msg}");
    assert!(msg.contains("check that the server runs"), "{msg}");
}

#[tokio::test]
async fn password_in_url_is_redacted_in_errors() {
    let err = Database::connect_url("postgres://dcuser:s3cr3t-pw@127.0.0.1:1/x", &quick())
        .await
        .expect_err("nothing listens on port 1");
    let msg = err.to_string();
    assert!(!msg.contains("s3cr3t-pw"), "password leaked: {msg}");
    assert!(msg.contains("postgres://dcuser:<redacted>@127.0.0.1:1/x"), "{msg}");
    let dbg = format!("{err:?}");
    assert!(!dbg.contains("s3cr3t-pw"), "password leaked in Debug: {dbg}");

    // an unparsable URL with a password is redacted too
    let err = Database::connect_url("postgres://dcuser:s3cr3t-pw@127.0.0.1:notaport/x", &quick())
        .await
        .expect_err("bad port");
    let msg = err.to_string();
    assert!(!msg.contains("s3cr3t-pw"), "password leaked: {msg}");
    assert!(msg.contains("<redacted>"), "{msg}");
}

#[tokio::test]
async fn unusable_sqlite_path_names_url() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"not a directory").expect("write");
    // the database's directory would have to be created inside a regular file
    let url = format!("sqlite://{}/sub/t.db", file.display());
    let err = Database::connect_url(&url, &quick()).await.expect_err("cannot create a directory in a file");
    assert!(matches!(err, DbError::SqliteFile(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&url) && msg.contains("does not exist"), "{msg}");
    assert!(!msg.contains("server"), "no server hint for a file database: {msg}");

    // an explicit URL into a missing directory is an error, not a silent mkdir -p
    let missing = dir.path().join("nowhere/deeper");
    let url = format!("sqlite://{}/t.db", missing.display());
    let err = Database::connect_url(&url, &quick()).await.expect_err("missing directory");
    let msg = err.to_string();
    assert!(msg.contains(&format!("mkdir -p {}", missing.display())), "{msg}");
    assert!(!missing.exists(), "nothing was created");
    // the default database under the data directory is created on first start
    let mut s = quick();
    s.general.data_dir = dir.path().join("fresh-data");
    let db = Database::connect(&s).await.expect("first start creates the data directory");
    db.close().await;
    assert!(dir.path().join("fresh-data/dc-host.db").exists());

    let err = Database::connect_url("mysql://u:pw@h/db", &quick()).await.expect_err("unsupported scheme");
    assert!(matches!(err, DbError::BadUrl { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("sqlite://") && msg.contains("postgres://") && !msg.contains(":pw@"), "{msg}");
}

/// A raw '@' in a password is legal for the URL parser (the last '@' ends the
/// user info), so the redaction must not leave the rest of the password visible.
#[tokio::test]
async fn password_containing_at_sign_is_redacted() {
    let url = "postgres://dcuser:p@ss-s3cr3t@127.0.0.1:1/x";
    let err = Database::connect_url(url, &quick()).await.expect_err("nothing listens on port 1");
    let msg = err.to_string();
    assert!(matches!(err, DbError::Connect { .. }), "the URL parses (the password is \"p@ss-s3cr3t\"): {err:?}");
    assert!(!msg.contains("s3cr3t"), "part of the password leaked: {msg}");
}

/// PostgreSQL URLs may carry the password as a query parameter.
#[tokio::test]
async fn password_query_parameter_is_redacted() {
    let url = "postgres://dcuser@127.0.0.1:1/x?password=q-s3cr3t&sslmode=disable";
    let err = Database::connect_url(url, &quick()).await.expect_err("nothing listens on port 1");
    let msg = err.to_string();
    assert!(matches!(err, DbError::Connect { .. }), "{err:?}");
    assert!(!msg.contains("q-s3cr3t"), "password leaked: {msg}");
    assert!(msg.contains("127.0.0.1:1"), "the URL must still be named: {msg}");
}

/// A connection the server drops mid-session (here: terminated by an
/// administrator, as on a server restart) is reported as lost, not as a
/// protocol error.
#[tokio::test]
async fn a_dropped_connection_reads_database_connection_lost() {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&crate::common::pg_admin_url()).await.expect("connect");
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut conn).await.expect("pid");
    let mut admin = sqlx::PgConnection::connect(&crate::common::pg_admin_url()).await.expect("admin");
    let killed: bool =
        sqlx::query_scalar("SELECT pg_terminate_backend($1)").bind(pid).fetch_one(&mut admin).await.expect("terminate");
    assert!(killed);
    let err = sqlx::query("SELECT 1").execute(&mut conn).await.expect_err("the connection is gone");
    assert!(dc_core::db::is_connection_lost(&err), "{err:?}");
    let msg = DbError::Query(err).to_string();
    assert!(msg.starts_with("database connection lost ("), "{msg}");
}
