//! Operator-facing CLI behaviour: configuration errors name the key and the fix,
//! `config show` redacts secrets, the secrets store works end to end (including
//! `${secret:NAME}` references in settings), the db commands guard drops, and
//! output into a closed pipe ends quietly.

use std::io::Write;
use std::process::Stdio;

use dc_e2e::{Host, workspace};

/// How many migrations this build has (one file per version and backend).
fn migrations() -> usize {
    std::fs::read_dir(workspace().join("migrations/postgres")).expect("migrations").count()
}

/// The newest migration number below `n`.
fn versions_below(n: u32) -> u32 {
    std::fs::read_dir(workspace().join("migrations/postgres"))
        .expect("migrations")
        .filter_map(|e| e.ok()?.file_name().to_str()?.get(..4)?.parse::<u32>().ok())
        .filter(|v| *v < n)
        .max()
        .expect("an older migration")
}

#[test]
fn configuration_errors_name_the_key_and_what_is_allowed() {
    let mut host = Host::sqlite();
    host.env.push(("DC_RUNS_THREDS".into(), "4".into()));
    let (code, text) = host.fails(&["plugins", "list"]);
    assert_eq!(code, 2);
    assert!(text.contains("DC_RUNS_THREDS") && text.contains("unknown field `threds`"), "{text}");

    let host = Host::sqlite();
    let cfg = host.dir.path().join("dc.toml");
    std::fs::write(&cfg, "[runs]\nthreads = 0\n").expect("write config");
    let (_, text) = host.fails(&["--config", cfg.to_str().expect("utf-8"), "plugins", "list"]);
    assert!(text.contains("invalid setting runs.threads = 0: 1 to 256"), "{text}");

    let (_, text) = host.fails(&["--config", "/nonexistent/dc.toml", "plugins", "list"]);
    assert!(text.contains("cannot read config file /nonexistent/dc.toml"), "{text}");
}

#[test]
fn config_show_redacts_passwords() {
    let mut host = Host::sqlite();
    host.env.push(("DC_DATABASE_URL".into(), "postgres://dc:hunter2@127.0.0.1:5432/dc".into()));
    let out = host.ok(&["config", "show"]);
    assert!(out.contains("postgres://dc:<redacted>@127.0.0.1:5432/dc"), "{out}");
    assert!(!out.contains("hunter2"), "{out}");
    assert!(out.contains("threads = 4"), "{out}");
}

fn set_secret(host: &Host, name: &str, value: &str) {
    let mut child =
        host.command(&["secrets", "set", name]).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().expect("spawn");
    child.stdin.take().expect("stdin").write_all(value.as_bytes()).expect("write value");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "secrets set failed: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn secrets_round_trip_rotate_and_resolve_in_settings() {
    let host = Host::sqlite();
    set_secret(&host, "db_name", "postgres");
    set_secret(&host, "api.token", "s3cr3t value");
    assert_eq!(host.ok(&["secrets", "get", "api.token"]).trim_end(), "s3cr3t value");
    let names = host.json(&["secrets", "list", "--json"]);
    assert_eq!(names, serde_json::json!(["api.token", "db_name"]));
    let stored = std::fs::read_to_string(host.dir.path().join("secrets.json")).expect("store file");
    assert!(!stored.contains("s3cr3t"), "values are encrypted at rest");

    let out = host.ok(&["secrets", "rotate-key"]);
    assert!(out.contains("key rotated"), "{out}");
    assert_eq!(host.ok(&["secrets", "get", "api.token"]).trim_end(), "s3cr3t value");

    // a setting that references a secret is resolved at start
    let mut host = host;
    host.env.push(("DC_DATABASE_URL".into(), "postgres://postgres@127.0.0.1:5432/${secret:db_name}".into()));
    let status = host.json(&["db", "status", "--json"]);
    assert!(status.as_array().is_some_and(|a| !a.is_empty()), "{status}");
    host.env.pop();
    host.env.push(("DC_DATABASE_URL".into(), "postgres://postgres@127.0.0.1:5432/${secret:missing}".into()));
    let (_, text) = host.fails(&["db", "status"]);
    assert!(text.contains("missing") && text.contains("dc-host secrets set"), "{text}");
    host.env.pop();

    // secrets commands neither resolve references nor need the database: the
    // secret a database URL refers to can be set while that database is down
    host.env.push(("DC_DATABASE_URL".into(), "postgres://postgres:${secret:pg_password}@127.0.0.1:1/dc".into()));
    set_secret(&host, "pg_password", "later");
    assert_eq!(host.ok(&["secrets", "get", "pg_password"]).trim_end(), "later");
    host.env.pop();

    // a wrong key never yields plaintext
    host.env.push(("DC_SECRETS_KEY".into(), "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into()));
    let (_, text) = host.fails(&["secrets", "get", "api.token"]);
    assert!(!text.contains("s3cr3t"), "{text}");
    assert!(text.contains("DC_SECRETS_KEY"), "{text}");
}

#[test]
fn db_commands_migrate_deploy_and_guard_drop() {
    let host = Host::sqlite();
    let out = host.ok(&["db", "migrate"]);
    assert!(out.contains(&format!("applied {} migration(s)", migrations())), "{out}");
    assert!(host.ok(&["db", "migrate"]).contains("applied 0 migration(s)"));
    let st = host.json(&["db", "status", "--json"]);
    let all_applied = st.as_array().is_some_and(|a| a.len() == migrations() && a.iter().all(|m| m["applied"] == true));
    assert!(all_applied, "{st}");
    assert!(host.ok(&["db", "deploy"]).contains("deployed"));
    let (_, text) = host.fails(&["db", "drop"]);
    assert!(text.contains("--yes-drop-everything"), "{text}");
    let out = host.ok(&["db", "drop", "--yes-drop-everything"]);
    assert!(out.contains("apps") && out.contains("runtime"), "{out}");
    let st = host.json(&["db", "status", "--json"]);
    assert_eq!(st[0]["applied"], false);
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    // the reader end is closed before dc-host writes: like `dc-host … | head`
    let host = Host::sqlite();
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = host
        .command(&["interface", "--json"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("dc-host runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{stderr}");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(13), "ended by SIGPIPE, as Unix tools do: {:?}", out.status);
}

#[test]
fn config_show_hides_splunk_credentials_and_warns_about_foreign_variables() {
    let mut host = Host::sqlite();
    host.env.push(("DC_LOGGING_SPLUNK_URL".into(), "https://admin:hunter2@127.0.0.1:1/services/collector".into()));
    host.env.push(("DC_LOGGING_SPLUNK_TOKEN".into(), "tok-s3cr3t".into()));
    host.env.push(("DC_DEPLOY_ENV".into(), "prod".into()));
    let out = host.run(&["config", "show"]);
    assert!(out.status.success(), "{out:?}");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(!shown.contains("hunter2") && !shown.contains("tok-s3cr3t"), "{shown}");
    assert!(shown.contains("https://admin:<redacted>@127.0.0.1:1/services/collector"), "{shown}");
    let warned = String::from_utf8_lossy(&out.stderr);
    assert!(warned.contains("warning: DC_DEPLOY_ENV is not a dc-host setting and is ignored"), "{warned}");
}

#[test]
fn only_db_migrate_changes_the_schema_and_other_commands_say_to_run_it() {
    let host = Host::postgres_empty();
    // an empty server database is not migrated behind the operator's back
    let (code, text) = host.fails(&["plugins", "list"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("has no dc-host schema yet: run `dc-host db migrate`"), "{text}");
    assert!(host.ok(&["db", "migrate"]).contains(&format!("applied {} migration(s)", migrations())));
    host.ok(&["plugins", "list"]);

    // a schema behind this build (as after an upgrade) is refused until migrated:
    // undo the newest migration (16: the change feed's entries compressed with lz4)
    host.pg_sql(
        "ALTER TABLE run_changes ALTER COLUMN row_keys SET COMPRESSION default; \
         DELETE FROM _sqlx_migrations WHERE version = 16",
    );
    let before = versions_below(16);
    let (code, text) = host.fails(&["runs", "list"]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains(&format!("is at schema version {before}, this dc-host needs 16: run `dc-host db migrate`")),
        "{text}"
    );
    assert!(host.ok(&["db", "migrate"]).contains("applied 1 migration(s)"));
    host.ok(&["runs", "list"]);

    // a schema from a newer dc-host is refused: this one would not know its tables
    host.pg_sql(
        "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time) \
         VALUES (99, 'from the future', now(), true, '\\x00', 0)",
    );
    let (_, text) = host.fails(&["runs", "list"]);
    assert!(
        text.contains("has schema versions this dc-host does not know (99): a newer dc-host migrated it"),
        "{text}"
    );

    // the embedded default still starts on its own: a first start migrates the empty file
    let fresh = Host::sqlite();
    fresh.ok(&["plugins", "list"]);
}

#[test]
fn concurrent_first_starts_on_an_empty_embedded_database_all_succeed() {
    // each process finds the file empty and migrates it: the migration lock
    // serializes them, so none fails with "table already exists"
    let host = Host::sqlite();
    let children: Vec<_> = (0..6)
        .map(|_| {
            host.command(&["runs", "list", "--json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn")
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().expect("wait");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}
