//! Architecture invariants checked by the suite: the interface crate
//! `dc-plugin-api` depends on abi_stable, serde and serde_json only; neither it
//! nor `dc-plugin-sdk` depends on tokio, sqlx, lapin or axum (so plugins stay
//! small and host internals can change); the SDK's public API exposes no type of
//! the `scraper` crate; the scaffold template depends on the SDK alone; and every
//! source file starts with a `//!` header.

use std::process::Command;

use dc_e2e::workspace;

/// The normal dependencies of a workspace package, one `name vX` per line.
fn tree(package: &str, depth: &str) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["tree", "-p", package, "-e", "normal", "--prefix", "none", "--offline", "--depth", depth])
        .current_dir(workspace())
        .output()
        .expect("cargo tree runs");
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_interface_crate_depends_on_abi_stable_and_serde_only() {
    let direct: Vec<String> = tree("dc-plugin-api", "1")
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    assert_eq!(direct, vec!["abi_stable", "serde", "serde_json"], "dc-plugin-api's direct dependencies");
}

#[test]
fn plugin_crates_do_not_depend_on_host_runtime_crates() {
    for package in ["dc-plugin-api", "dc-plugin-sdk"] {
        let tree = tree(package, "100");
        assert!(tree.contains("abi_stable"), "unexpected tree:\n{tree}");
        for banned in ["tokio ", "sqlx", "lapin", "axum", "dc-core", "dc-runtime"] {
            assert!(!tree.lines().any(|l| l.starts_with(banned)), "{package} must not depend on {banned}:\n{tree}");
        }
    }
}

#[test]
fn the_sdk_api_exposes_no_scraper_types_and_the_template_needs_only_the_sdk() {
    let src = workspace().join("plugin-api/sdk/src");
    let mut leaks = Vec::new();
    for entry in std::fs::read_dir(&src).expect("sdk src").flatten() {
        let text = std::fs::read_to_string(entry.path()).expect("read");
        for (n, line) in text.lines().enumerate() {
            let l = line.trim_start();
            if l.starts_with("pub ") && (l.contains("scraper::") || l.starts_with("pub use scraper")) {
                leaks.push(format!("{}:{}: {l}", entry.file_name().to_string_lossy(), n + 1));
            }
        }
    }
    assert!(leaks.is_empty(), "public SDK items naming scraper types: {leaks:?}");
    let template = std::fs::read_to_string(workspace().join("sdk-template/Cargo.toml.tmpl")).expect("template");
    let deps: Vec<&str> = template
        .split("[dependencies]")
        .nth(1)
        .expect("a [dependencies] table")
        .lines()
        .take_while(|l| !l.starts_with('['))
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split('=').next().map(str::trim))
        .collect();
    assert_eq!(deps, vec!["dc-plugin-sdk", "serde"], "the scaffolded crate depends on the SDK (and serde) only");
    for example in ["plugins/catalogue/Cargo.toml", "tests/fixtures/plugins/misbehave/Cargo.toml"] {
        let text = std::fs::read_to_string(workspace().join(example)).expect("read");
        assert!(!text.contains("abi_stable") && !text.contains("dc-plugin-api"), "{example} must use the SDK only");
    }
}

#[test]
fn every_source_file_says_what_it_is_for() {
    let mut missing = Vec::new();
    let mut stack = vec![workspace()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("readable dir").flatten() {
            let p = entry.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
            if p.is_dir() {
                if !matches!(name.as_str(), "target" | "var" | ".git" | "fixtures" | "node_modules") {
                    stack.push(p);
                }
            } else if name.ends_with(".rs") {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                if !text.trim_start().starts_with("//!") {
                    missing.push(p.strip_prefix(workspace()).unwrap_or(&p).display().to_string());
                }
            }
        }
    }
    assert!(missing.is_empty(), "files without a //! header: {missing:?}");
}
