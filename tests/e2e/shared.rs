//! Shared tables end to end (issue #7 item 2): two real plugins of different
//! apps that both declare one table shared register, and each one's full
//! snapshot leaves the other's rows alone; the same table declared by a third
//! app without `shared` is refused, naming the owner; deleting one app with
//! its data removes only its rows.

use dc_e2e::{ApiVariant, Host, tiny_plugin};

const TABLE: &str = "shared_rows";

fn build(name: &str, item: &str, shared: bool, dir: &std::path::Path) -> std::path::PathBuf {
    let mut envs = vec![("DC_FIXTURE_TABLE", TABLE), ("DC_FIXTURE_NAME", name), ("DC_FIXTURE_ITEM", item)];
    if shared {
        envs.push(("DC_FIXTURE_SHARED", "1"));
    }
    tiny_plugin(&format!("shared-{name}"), ApiVariant::Workspace, &envs, dir)
}

fn ids(host: &Host) -> Vec<String> {
    host.db_rows(&format!("SELECT CAST(id AS TEXT) FROM {TABLE} ORDER BY id"))
}

fn two_apps_share_one_table(new_host: fn() -> Host) {
    let host = new_host();
    let dir = tempfile::tempdir().expect("tempdir");
    host.install(&build("sharea", "1", true, dir.path()), "sharea.so");
    host.install(&build("shareb", "2", true, dir.path()), "shareb.so");
    let out = host.ok(&["reload"]);
    assert!(
        out.contains("registered test/fixtures/sharea") && out.contains("registered test/fixtures/shareb"),
        "{out}"
    );

    for (app, inserted) in [("test/fixtures/sharea", 1), ("test/fixtures/shareb", 1), ("test/fixtures/sharea", 0)] {
        let r = host.json(&["run", app, "--json"]);
        assert_eq!(r["status"], "SUCCESS", "{r}");
        assert_eq!(r["inserted"], inserted, "{r}");
        assert_eq!(r["deleted"], 0, "a full snapshot of one app never deletes the other's row: {r}");
    }
    assert_eq!(ids(&host), ["1", "2"]);
    let owners = host.db_rows(&format!("SELECT _app_id FROM {TABLE} ORDER BY id"));
    assert_eq!(owners.len(), 2);
    assert_ne!(owners[0], owners[1], "each row names the app that inserted it: {owners:?}");

    // a third app that does not share it is refused, naming the owner
    let lone = host.install(&build("sharec", "3", false, dir.path()), "sharec.so");
    let (code, out) = host.fails(&["reload"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("table \"{TABLE}\" is shared by app test/fixtures/sharea")), "{out}");
    std::fs::remove_file(lone).expect("remove");

    // deleting one sharer with its data removes its row only
    std::fs::remove_file(host.plugins_dir().join("shareb.so")).expect("remove");
    let gone = host.json(&["apps", "rm", "test/fixtures/shareb", "--drop-data", "--yes", "--json"]);
    assert_eq!(gone["left_shared_tables"], serde_json::json!([TABLE]), "{gone}");
    assert_eq!(ids(&host), ["1"]);
}

dc_e2e::both_backends!(two_apps_share_one_table);
