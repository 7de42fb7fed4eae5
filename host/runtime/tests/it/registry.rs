//! Registration, reload and rollback of real plugin files (`registry`): the
//! outcomes of registering the same file again, a newer version, a rollback
//! and a re-registration of the newer file; refusals that leave the registry
//! and the plugin store exactly as they were; a reload that registers what is
//! new and reports what it refuses, every time.

use std::path::Path;

use dc_core::{ErrorKind, apps};
use dc_runtime::registry::{self, RegisterOutcome};
use serde_json::json;

use crate::common::{APP, TestEnv, refusal, text_file};

both_backends!(
    register_then_already_active_then_a_new_version_and_rollback,
    refused_files_leave_the_registry_unchanged,
    reload_registers_new_files_and_reports_refused_ones,
);

async fn register_then_already_active_then_a_new_version_and_rollback(t: &TestEnv) {
    let v1 = t.misbehave_build("1.0.0").await;
    let v2 = t.misbehave_build("1.1.0").await;
    let (sha1, sha2) = (dc_e2e::sha256_hex(&v1), dc_e2e::sha256_hex(&v2));
    assert_ne!(sha1, sha2, "two builds of different versions differ");

    let out = registry::register_file(&t.env, &v1).await.expect("1.0.0 registers");
    let RegisterOutcome::Registered { app, version, previous, sha256, .. } = out else {
        panic!("expected Registered, got {out:?}")
    };
    assert_eq!((app.as_str(), version.as_str(), previous, sha256.as_str()), (APP, "1.0.0", None, sha1.as_str()));
    // the store keeps its own copy of the file, and the declared tables exist (empty)
    let row = apps::version_by_hash(t.db(), &sha1).await.expect("lookup").expect("1.0.0 is in the registry");
    assert_eq!(row.version, "1.0.0");
    assert!(row.store_path.starts_with(&t.env.settings.store_dir().display().to_string()), "{}", row.store_path);
    assert_eq!(dc_e2e::sha256_hex(Path::new(&row.store_path)), sha1, "the stored copy is the file");
    let app_row = t.app().await;
    assert_eq!((app_row.active_version.as_deref(), app_row.active_hash.as_deref()), (Some("1.0.0"), Some(&*sha1)));
    let (_, manifest) = dc_runtime::supervisor::active_plugin(&t.env, &app_row).await.expect("active plugin");
    for table in &manifest.tables {
        let rows = dc_core::merge::preview(t.db(), table, 10).await.expect("the declared table exists");
        assert!(rows.is_empty(), "{}: {rows:?}", table.name);
    }

    // the same file again: nothing to do, nothing changes
    let before = t.registry_state().await;
    let out = registry::register_file(&t.env, &v1).await.expect("the same file again");
    assert!(
        matches!(&out, RegisterOutcome::AlreadyActive { app, version } if app == APP && version == "1.0.0"),
        "{out:?}"
    );
    assert_eq!(t.registry_state().await, before, "registering the active file again changes nothing");

    // a newer version becomes active, naming the one it replaced
    let out = registry::register_file(&t.env, &v2).await.expect("1.1.0 registers");
    assert!(
        matches!(&out, RegisterOutcome::Registered { version, previous: Some(p), sha256, .. }
            if version == "1.1.0" && p == "1.0.0" && *sha256 == sha2),
        "{out:?}"
    );
    let app_row = t.app().await;
    assert_eq!((app_row.active_version.as_deref(), app_row.active_hash.as_deref()), (Some("1.1.0"), Some(&*sha2)));
    let mut versions: Vec<String> =
        apps::versions(t.db(), &app_row.app_id).await.expect("versions").into_iter().map(|v| v.version).collect();
    versions.sort();
    assert_eq!(versions, ["1.0.0", "1.1.0"]);

    // rollback without a target goes to the highest version below the active one
    let (from, to) = registry::rollback(&t.env, APP, None).await.expect("rollback");
    assert_eq!((from.as_deref(), to.as_str()), (Some("1.1.0"), "1.0.0"));
    let app_row = t.app().await;
    assert_eq!((app_row.active_version.as_deref(), app_row.active_hash.as_deref()), (Some("1.0.0"), Some(&*sha1)));
    // and new runs use the version rolled back to
    let run = t.run(json!({"mode": "ok", "items": 1}), None).await;
    assert_eq!((run.status.as_str(), run.plugin_version.as_str()), ("SUCCESS", "1.0.0"), "{run:?}");
    assert_eq!(run.plugin_hash, sha1);

    // the newer file is known, but registering it again does not re-activate it silently
    let out = registry::register_file(&t.env, &v2).await.expect("1.1.0 again");
    assert!(
        matches!(&out, RegisterOutcome::KnownInactive { version, active: Some(a), .. } if version == "1.1.0" && a == "1.0.0"),
        "{out:?}"
    );
    assert_eq!(t.app().await.active_version.as_deref(), Some("1.0.0"));

    // a rollback to an unregistered version is refused, naming the registered ones
    let msg = refusal(registry::rollback(&t.env, APP, Some("9.9.9")).await, ErrorKind::NotFound);
    assert!(msg.contains("has no registered version 9.9.9; registered: ") && msg.contains("1.1.0"), "{msg}");
    // `--to` may name a newer registered version
    let (from, to) = registry::rollback(&t.env, APP, Some("1.1.0")).await.expect("rollback to 1.1.0");
    assert_eq!((from.as_deref(), to.as_str()), (Some("1.0.0"), "1.1.0"));
    assert_eq!(t.app().await.active_hash.as_deref(), Some(&*sha2));
}

async fn refused_files_leave_the_registry_unchanged(t: &TestEnv) {
    let newer = t.misbehave_build("1.1.0").await;
    let older = t.misbehave_build("1.0.0").await;
    let out = registry::register_file(&t.env, &newer).await.expect("1.1.0 registers");
    assert!(matches!(&out, RegisterOutcome::Registered { version, .. } if version == "1.1.0"), "{out:?}");
    let before = t.registry_state().await;
    assert_eq!(before.apps.len(), 1, "{before:?}");
    assert!(!before.store.is_empty(), "the registered file is in the store");

    // a file that is not a library: refused by the probe
    let text = text_file(&t.builds_dir(), "notes.so");
    let msg = refusal(registry::register_file(&t.env, &text).await, ErrorKind::Invalid);
    assert!(msg.contains("is not a shared library (no ELF header)"), "{msg}");
    assert_eq!(t.registry_state().await, before, "a file the probe refuses changes nothing");

    // a good plugin the registry will not take: an older version than the active one
    let msg = refusal(registry::register_file(&t.env, &older).await, ErrorKind::Conflict);
    assert!(
        msg.contains("registering test/fixtures/misbehave 1.0.0 would downgrade it from the active version 1.1.0")
            && msg.contains("dc-host plugins rollback test/fixtures/misbehave --to VERSION"),
        "{msg}"
    );
    assert_eq!(t.registry_state().await, before, "a refused downgrade changes nothing");
    // the file itself is fine: probing it (without registering) shows it
    let probed = registry::inspect(&t.env, &older).await.expect("the older build probes");
    assert_eq!(probed.manifest.version, "1.0.0");
    assert_eq!(t.registry_state().await, before, "inspecting registers nothing");

    // nothing older is registered to roll back to
    let msg = refusal(registry::rollback(&t.env, APP, None).await, ErrorKind::NotFound);
    assert!(msg.contains("has no registered version older than 1.1.0"), "{msg}");
    assert_eq!(t.registry_state().await, before, "a refused rollback changes nothing");

    // the active version keeps serving
    let run = t.run(json!({"mode": "ok", "items": 2}), None).await;
    assert_eq!((run.status.as_str(), run.plugin_version.as_str(), run.inserted), ("SUCCESS", "1.1.0", 2), "{run:?}");
}

async fn reload_registers_new_files_and_reports_refused_ones(t: &TestEnv) {
    let plugins = t.env.settings.plugins_dir();
    std::fs::create_dir_all(&plugins).expect("plugins dir");
    let lib = tokio::task::spawn_blocking(|| dc_e2e::plugin_lib("dc_plugin_misbehave")).await.expect("build");
    std::fs::copy(&lib, plugins.join("misbehave.so")).expect("copy plugin");
    text_file(&plugins, "notes.so");
    // neither a hidden file (a copy in progress) nor another extension is a plugin file
    text_file(&plugins, ".misbehave.so.partial.so");
    text_file(&plugins, "README.txt");

    let first = registry::reload(&t.env).await.expect("reload");
    let files: Vec<_> = first.iter().map(|e| e.file.clone()).collect();
    assert_eq!(files, [plugins.join("misbehave.so"), plugins.join("notes.so")], "{first:?}");
    assert!(
        matches!(&first[0].result, Ok(RegisterOutcome::Registered { app, version, previous: None, .. })
            if app == APP && version == "1.0.0"),
        "{first:?}"
    );
    let refused = first[1].result.as_ref().expect_err("the text file is refused");
    assert!(refused.contains("is not a shared library (no ELF header)"), "{refused}");
    let after_first = t.registry_state().await;
    assert_eq!(after_first.apps.len(), 1, "only the plugin became an app: {after_first:?}");

    // a second reload: the plugin is already active, the refusal is repeated, not forgotten
    let second = registry::reload(&t.env).await.expect("reload again");
    assert_eq!(second.len(), 2, "{second:?}");
    assert!(
        matches!(&second[0].result, Ok(RegisterOutcome::AlreadyActive { version, .. }) if version == "1.0.0"),
        "{second:?}"
    );
    assert_eq!(second[1].result.as_ref().expect_err("refused again"), refused);
    assert_eq!(t.registry_state().await, after_first, "a reload with nothing new changes nothing");
}
