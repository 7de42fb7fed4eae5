//! Schema evolution end to end: an additive table change is applied and
//! reported by `reload`; a breaking one is refused naming the column, its old
//! and new declaration and `dc-host data migrate`, which plans (changing
//! nothing) and applies the migration, keeping first-seen history, after
//! which the same data counts as unchanged; a rollback follows the same rules.

use dc_e2e::{ApiVariant, Host, tiny_plugin};

const TINY: &str = "test/fixtures/tiny";
const TABLE: &str = "evolve_rows";

fn build(variant: &str, version: &str, extra: &[(&str, &str)], dir: &std::path::Path) -> std::path::PathBuf {
    let mut envs = vec![("DC_FIXTURE_TABLE", TABLE), ("DC_FIXTURE_VERSION", version), ("DC_FIXTURE_FLAVOUR", "7")];
    envs.extend_from_slice(extra);
    tiny_plugin(variant, ApiVariant::Workspace, &envs, dir)
}

fn one(host: &Host, sql: &str) -> String {
    host.db_rows(sql).into_iter().next().unwrap_or_default()
}

fn evolve(host: Host) {
    let dir = tempfile::tempdir().expect("tempdir");
    let v1 = build("evolve-v1", "1.0.0", &[], dir.path());
    let v11 = build("evolve-v11", "1.1.0", &[("DC_FIXTURE_EXTRA", "1")], dir.path());
    let v2 =
        build("evolve-v2", "2.0.0", &[("DC_FIXTURE_EXTRA", "1"), ("DC_FIXTURE_FLAVOUR_TYPE", "integer")], dir.path());

    host.install(&v1, "tiny-1.0.0.so");
    host.ok(&["reload"]);
    let r = host.json(&["run", TINY, "--json"]);
    assert_eq!((r["status"].as_str(), r["inserted"].as_i64()), (Some("SUCCESS"), Some(1)), "{r}");
    let first_seen = one(&host, &format!("SELECT CAST(_first_seen AS TEXT) FROM {TABLE}"));
    assert!(!first_seen.is_empty());

    // additive: applied and reported
    host.install(&v11, "tiny-1.1.0.so");
    let out = host.ok(&["reload"]);
    assert!(out.contains(&format!("table change applied: {TABLE}: column \"extra\" added (text, nullable)")), "{out}");
    assert_eq!(host.active_version(TINY).as_deref(), Some("1.1.0"));
    let r = host.json(&["run", TINY, "--json"]);
    assert_eq!(r["unchanged"], 1, "a new NULL column changes no row: {r}");

    // breaking: refused, naming the column, old and new, and the command
    let v2_path = host.install(&v2, "tiny-2.0.0.so");
    let (code, out) = host.fails(&["reload"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(&format!(
            "table \"{TABLE}\" cannot change this way without migrating its rows: column \"flavour\" changes type: text, nullable → integer, nullable"
        )) && out.contains(&format!("dc-host data migrate {TINY} --file {} --plan", v2_path.display())),
        "{out}"
    );
    assert_eq!(host.active_version(TINY).as_deref(), Some("1.1.0"), "the active version stays");

    // the plan migrates in a transaction it rolls back
    let file = v2_path.display().to_string();
    let out = host.ok(&["data", "migrate", TINY, "--file", &file, "--plan"]);
    assert!(out.contains(&format!("plan: would migrate table {TABLE} (1 rows, 1 values converted")), "{out}");
    assert!(out.contains("nothing was changed"), "{out}");
    assert_eq!(host.active_version(TINY).as_deref(), Some("1.1.0"));
    let rows = host.json(&["data", "head", TABLE, "--json"]);
    assert_eq!(rows[0]["flavour"], "7", "still text after a plan: {rows}");

    // apply: one transaction, first-seen kept, the version active
    let out = host.ok(&["data", "migrate", TINY, "--file", &file, "--apply"]);
    assert!(out.contains(&format!("migrated table {TABLE} (1 rows")) && out.contains("2.0.0 is active"), "{out}");
    assert_eq!(host.active_version(TINY).as_deref(), Some("2.0.0"));
    let rows = host.json(&["data", "head", TABLE, "--json"]);
    assert_eq!(rows[0]["flavour"], 7, "converted to an integer: {rows}");
    assert_eq!(one(&host, &format!("SELECT CAST(_first_seen AS TEXT) FROM {TABLE}")), first_seen);
    let r = host.json(&["run", TINY, "--json"]);
    assert_eq!(
        (r["status"].as_str(), r["unchanged"].as_i64()),
        (Some("SUCCESS"), Some(1)),
        "the migrated row is the row 2.0.0 collects: {r}"
    );

    // a rollback follows the same rules
    let (code, out) = host.fails(&["plugins", "rollback", TINY, "--to", "1.1.0"]);
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("column \"flavour\" changes type: integer, nullable → text, nullable")
            && out.contains(&format!("dc-host data migrate {TINY} --to 1.1.0 --plan")),
        "{out}"
    );
    assert_eq!(host.active_version(TINY).as_deref(), Some("2.0.0"));
    let out = host.ok(&["data", "migrate", TINY, "--to", "1.1.0", "--apply"]);
    assert!(out.contains("1.1.0 is active"), "{out}");
    assert_eq!(host.active_version(TINY).as_deref(), Some("1.1.0"));
    let rows = host.json(&["data", "head", TABLE, "--json"]);
    assert_eq!(rows[0]["flavour"], "7", "{rows}");
}

#[test]
fn table_changes_are_explicit_on_sqlite() {
    evolve(Host::sqlite());
}

#[test]
fn table_changes_are_explicit_on_postgres() {
    evolve(Host::postgres());
}
