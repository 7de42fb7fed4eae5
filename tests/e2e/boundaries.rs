//! Architecture invariants checked by the suite: `dc-plugin-api` never depends on
//! tokio, sqlx, lapin or axum (so plugins stay small and host internals can
//! change), and every source file starts with a `//!` header.

use std::process::Command;

use dc_e2e::workspace;

#[test]
fn plugin_api_does_not_depend_on_host_runtime_crates() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["tree", "-p", "dc-plugin-api", "-e", "normal", "--prefix", "none", "--offline"])
        .current_dir(workspace())
        .output()
        .expect("cargo tree runs");
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(tree.contains("abi_stable"), "unexpected tree:\n{tree}");
    for banned in ["tokio ", "sqlx", "lapin", "axum", "dc-core", "dc-runtime"] {
        assert!(!tree.lines().any(|l| l.starts_with(banned)), "dc-plugin-api must not depend on {banned}:\n{tree}");
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
