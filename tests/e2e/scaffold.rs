//! `dc-host scaffold-plugin` → `cargo test` + `cargo build --release` of the
//! generated crate → drop into the plugins dir → reload → run, without editing
//! the generated crate. Scaffolding writes files only, and app names that are
//! Rust keywords or template identifiers still give a crate that compiles.

use std::process::Command;

use dc_e2e::{FixtureSite, Host, target_dir};

#[test]
fn scaffolded_plugin_builds_tests_loads_and_runs_unchanged() {
    let host = Host::sqlite();
    let out_dir = host.dir.path().join("dc-plugin-shop-titles");
    let out = host.ok(&[
        "scaffold-plugin",
        "--group",
        "shop",
        "--parent",
        "acme",
        "--name",
        "shop_titles",
        "--out",
        out_dir.to_str().expect("utf-8 path"),
    ]);
    assert!(out.contains("app shop/acme/shop_titles (app id "), "{out}");
    // scaffolding wrote files only: no database was created
    let data: Vec<String> = std::fs::read_dir(host.dir.path())
        .expect("data dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(data, vec!["dc-plugin-shop-titles"], "only the crate was written");
    // a second scaffold into the same directory is refused
    let (_, text) = host.fails(&[
        "scaffold-plugin",
        "--group",
        "shop",
        "--parent",
        "acme",
        "--name",
        "shop_titles",
        "--out",
        out_dir.to_str().expect("utf-8"),
    ]);
    assert!(text.contains("already exists and is not empty"), "{text}");

    // the generated crate's own test passes, and it builds in release mode
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let shared_target = target_dir().join("scaffolded");
    for args in [&["test", "--offline"][..], &["build", "--release", "--offline"][..]] {
        let o = Command::new(&cargo)
            .args(args)
            .current_dir(&out_dir)
            .env("CARGO_TARGET_DIR", &shared_target)
            .output()
            .expect("cargo runs");
        assert!(
            o.status.success(),
            "cargo {args:?} in the scaffolded crate failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        if args[0] == "test" {
            let stdout = String::from_utf8_lossy(&o.stdout);
            assert!(stdout.contains("test tests::collects_linked_titles ... ok"), "{stdout}");
        }
    }

    let lib = shared_target.join("release/libdc_plugin_shop_titles.so");
    host.install(&lib, "shop_titles.so");
    let out = host.ok(&["reload"]);
    assert!(out.contains("registered shop/acme/shop_titles 0.1.0"), "{out}");

    let site = FixtureSite::start();
    let args = serde_json::json!({"base_url": format!("{}catalogue/page-1.html", site.base_url)}).to_string();
    let run = host.json(&["run", "shop/acme/shop_titles", "--args", &args, "--json"]);
    assert_eq!(run["status"], "SUCCESS", "{run}");
    assert_eq!(run["inserted"], 20, "page 1 of the catalogue links 20 products");
    let rows = host.json(&["data", "head", "shop_titles_pages", "--limit", "100", "--json"]);
    let titles: Vec<&str> = rows.as_array().expect("rows").iter().filter_map(|r| r["title"].as_str()).collect();
    assert_eq!(titles.len(), 20);
    assert!(titles.contains(&"Nordic Thermos"), "{titles:?}");

    // names that are keywords or template identifiers still compile
    for name in ["self", "args", "context"] {
        let dir = host.dir.path().join(format!("kw-{name}"));
        host.ok(&[
            "scaffold-plugin",
            "--group",
            "g",
            "--parent",
            "p",
            "--name",
            name,
            "--out",
            dir.to_str().expect("utf-8"),
        ]);
        let o = Command::new(&cargo)
            .args(["check", "--offline", "--all-targets"])
            .current_dir(&dir)
            .env("CARGO_TARGET_DIR", &shared_target)
            .output()
            .expect("cargo runs");
        assert!(
            o.status.success(),
            "the crate scaffolded as {name:?} does not compile:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}
