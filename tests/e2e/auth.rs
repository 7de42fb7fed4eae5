//! The control plane's accounts through real `dc-host` processes: users added
//! with the password on stdin, listed with `--json` (never a hash), refused
//! with the fix for bad input; clients added with their secret printed once
//! and stored only as an argon2id hash; `auth rotate-key` keeping the private
//! signing key in the secrets store and the public one in the database.

use std::process::Output;

use dc_e2e::{Host, with_stdin};

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

dc_e2e::both_backends!(users_and_clients_from_the_cli);

fn users_and_clients_from_the_cli(new_host: fn() -> Host) {
    let host = new_host();
    let out = with_stdin(&host, &["users", "add", "alice", "--role", "operator", "--password-stdin"], "s3cret-pass\n");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("user alice added with role operator"), "{}", text(&out));
    let out = with_stdin(&host, &["users", "add", "root", "--role", "admin", "--password-stdin"], "another-pass");
    assert!(out.status.success(), "{}", text(&out));

    let users = host.json(&["users", "list", "--json"]);
    let names: Vec<(&str, &str)> = users
        .as_array()
        .expect("an array")
        .iter()
        .map(|u| (u["name"].as_str().expect("name"), u["role"].as_str().expect("role")))
        .collect();
    assert_eq!(names, vec![("alice", "operator"), ("root", "admin")]);
    let listed = users.to_string();
    assert!(!listed.contains("argon2") && !listed.contains("s3cret-pass"), "{listed}");
    // the password is stored as an argon2id hash, never as given
    let hash = host.db_rows("SELECT password_hash FROM dc_auth_users WHERE name = 'alice'");
    assert!(hash[0].starts_with("$argon2id$v=19$") && !hash[0].contains("s3cret-pass"), "{hash:?}");

    // refusals name the problem and the fix, and change nothing
    let out = with_stdin(&host, &["users", "add", "alice", "--role", "viewer", "--password-stdin"], "s3cret-pass");
    assert!(!out.status.success() && text(&out).contains("user alice already exists"), "{}", text(&out));
    let out = with_stdin(&host, &["users", "add", "bob", "--role", "boss", "--password-stdin"], "s3cret-pass");
    assert!(text(&out).contains("use viewer, operator or admin"), "{}", text(&out));
    let out = with_stdin(&host, &["users", "add", "bob", "--role", "viewer", "--password-stdin"], "short");
    assert!(text(&out).contains("at least 8 characters"), "{}", text(&out));
    let (_, t) = host.fails(&["users", "add", "bob", "--role", "viewer"]);
    assert!(t.contains("--password-stdin"), "{t}");
    assert_eq!(host.json(&["users", "list", "--json"]).as_array().map(Vec::len), Some(2));

    let out = with_stdin(&host, &["users", "passwd", "alice", "--password-stdin"], "new-s3cret-pass\n");
    assert!(out.status.success(), "{}", text(&out));
    let new_hash = host.db_rows("SELECT password_hash FROM dc_auth_users WHERE name = 'alice'");
    assert_ne!(new_hash, hash);
    host.ok(&["users", "rm", "root"]);
    let (_, t) = host.fails(&["users", "rm", "root"]);
    assert!(t.contains("no user root: list the users with `dc-host users list`"), "{t}");

    // a client's secret is printed once, at creation
    let added = host.ok(&["clients", "add", "ci-bot", "--role", "viewer"]);
    let field = |name: &str| {
        added
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("{name} in {added}"))
    };
    let (id, secret) = (field("client_id:"), field("client_secret:"));
    assert!(id.starts_with("dcc_") && secret.len() == 43, "{added}");
    assert!(added.contains("shown only this once"), "{added}");
    let clients = host.json(&["clients", "list", "--json"]);
    assert_eq!(clients[0]["client_id"], id.as_str());
    assert_eq!(clients[0]["role"], "viewer");
    assert!(!clients.to_string().contains(&secret) && !clients.to_string().contains("argon2"), "{clients}");
    assert!(!host.ok(&["clients", "list"]).contains(&secret));
    let stored = host.db_rows("SELECT secret_hash FROM dc_auth_clients");
    assert!(stored[0].starts_with("$argon2id$") && !stored[0].contains(&secret), "{stored:?}");
    host.ok(&["clients", "rm", "ci-bot"]);
    assert_eq!(host.json(&["clients", "list", "--json"]).as_array().map(Vec::len), Some(0));

    // key rotation: the private halves in the secrets store, the public ones in the database
    let first = host.json(&["auth", "rotate-key", "--json"]);
    let second = host.json(&["auth", "rotate-key", "--json"]);
    let (k1, k2) = (first["kid"].as_str().expect("kid"), second["kid"].as_str().expect("kid"));
    assert_eq!(second["retired"], serde_json::json!([k1]));
    let secrets = host.json(&["secrets", "list", "--json"]);
    assert_eq!(secrets, serde_json::json!([format!("dc-auth.signing.{k2}")]), "the retired key's private half is gone");
    let keys = host.db_rows("SELECT kid FROM dc_auth_keys ORDER BY created_at");
    assert_eq!(keys, vec![k1.to_string(), k2.to_string()]);
}
