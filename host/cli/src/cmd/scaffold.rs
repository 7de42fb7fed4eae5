//! `dc-host scaffold-plugin`: renders `sdk-template/` (embedded in the binary)
//! into a new plugin crate that builds with `cargo build --release`, loads into
//! the host unchanged and has a passing test. It writes files only: the app is
//! registered when its first build is (`dc-host reload`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use dc_core::{Settings, apps};

const TEMPLATE: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("../../../../sdk-template/Cargo.toml.tmpl")),
    ("src/lib.rs", include_str!("../../../../sdk-template/src/lib.rs.tmpl")),
    ("README.md", include_str!("../../../../sdk-template/README.md.tmpl")),
    // the host's lock file pins the generated crate to the versions the host was built with
    ("Cargo.lock", include_str!("../../../../Cargo.lock")),
];

/// Kinds of plugin the template can generate.
#[derive(Clone, Copy, ValueEnum)]
pub enum PluginType {
    /// Collects records from web pages.
    Scraper,
}

/// Arguments of `scaffold-plugin`.
#[derive(Args)]
pub struct ScaffoldArgs {
    /// App group (e.g. a country or business area).
    #[arg(long)]
    group: String,
    /// App parent (e.g. the data source).
    #[arg(long)]
    parent: String,
    /// App name: lowercase letters, digits and '_'.
    #[arg(long)]
    name: String,
    /// Kind of plugin.
    #[arg(long = "type", value_enum, default_value = "scraper")]
    kind: PluginType,
    /// Directory to create (default: ./dc-plugin-NAME).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Path of the dc-plugin-sdk crate the plugin builds against (default: the
    /// one this host was built from).
    #[arg(long, alias = "plugin-api")]
    sdk: Option<PathBuf>,
}

fn check(what: &str, v: &str, ident: bool) -> anyhow::Result<()> {
    let ok = !v.is_empty()
        && v.len() <= 40
        && v.starts_with(|c: char| c.is_ascii_lowercase())
        && v.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || (!ident && c == '-'));
    if ok {
        Ok(())
    } else {
        anyhow::bail!(
            "--{what} {v:?} is not allowed: use lowercase letters, digits and '_' (at most 40), starting with a letter"
        )
    }
}

/// The generated crate's name, `dc-plugin-NAME`; refused when it would be
/// the name of one of dc-host's own plugin crates (a lockfile cannot hold two
/// packages of one name, so the plugin would not build against the SDK).
fn crate_name(name: &str) -> anyhow::Result<String> {
    let crate_name = format!("dc-plugin-{}", name.replace('_', "-"));
    if ["dc-plugin-api", "dc-plugin-sdk"].contains(&crate_name.as_str()) {
        anyhow::bail!(
            "--name {name:?} would make a crate named {crate_name}, the name of dc-host's own plugin crate; choose another name"
        );
    }
    Ok(crate_name)
}

fn pascal(s: &str) -> String {
    s.split('_').filter(|p| !p.is_empty()).map(|p| p[..1].to_uppercase() + &p[1..]).collect()
}

/// The scraper struct's name: `{Name}Scraper`, so no app name can collide with
/// a keyword (`self` → `SelfScraper`) or with a name the template uses
/// (`args` → `ArgsScraper`, not a second `Args`).
fn struct_name(name: &str) -> String {
    format!("{}Scraper", pascal(name))
}

/// A path as a TOML string literal (quotes, backslashes and control
/// characters escaped), for `path = …` in the generated Cargo.toml.
fn toml_string(path: &Path) -> String {
    toml::Value::String(path.display().to_string()).to_string()
}

fn render(text: &str, vars: &[(&str, String)]) -> String {
    vars.iter().fold(text.to_string(), |acc, (k, v)| acc.replace(&format!("{{{{{k}}}}}"), v))
}

fn default_sdk() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugin-api/sdk")
}

/// The SDK version this host's template is written for (from the SDK's Cargo.toml).
fn sdk_version() -> &'static str {
    include_str!("../../../../plugin-api/sdk/Cargo.toml")
        .lines()
        .find_map(|l| l.strip_prefix("version = \"").and_then(|v| v.strip_suffix('"')))
        .unwrap_or("?")
}

pub fn exec(a: ScaffoldArgs, settings: &Settings) -> anyhow::Result<ExitCode> {
    let PluginType::Scraper = a.kind;
    check("group", &a.group, false)?;
    check("parent", &a.parent, false)?;
    check("name", &a.name, true)?;
    let crate_name = crate_name(&a.name)?;
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from(&crate_name));
    if out.exists() && std::fs::read_dir(&out)?.next().is_some() {
        anyhow::bail!("{} already exists and is not empty; choose another --out", out.display());
    }
    let sdk = a.sdk.clone().unwrap_or_else(default_sdk);
    let sdk = sdk.canonicalize().map_err(|e| {
        anyhow::anyhow!(
            "dc-plugin-sdk not found at {} ({e}); pass --sdk PATH to the plugin-api/sdk directory of a dc-host checkout",
            sdk.display()
        )
    })?;
    let app_id = apps::app_id_for(&a.group, &a.parent, &a.name);
    let plugins_dir = settings.plugins_dir();
    let plugins_dir = std::path::absolute(&plugins_dir).unwrap_or(plugins_dir);
    let vars = [
        ("crate_name", crate_name.clone()),
        ("lib_name", crate_name.replace('-', "_")),
        ("struct_name", struct_name(&a.name)),
        ("group", a.group.clone()),
        ("parent", a.parent.clone()),
        ("name", a.name.clone()),
        ("table", format!("{}_pages", a.name)),
        ("app_id", app_id.to_string()),
        ("sdk_path", toml_string(&sdk)),
        ("sdk_version", sdk_version().to_string()),
        ("plugins_dir", plugins_dir.display().to_string()),
    ];
    for (file, text) in TEMPLATE {
        let path = out.join(file);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, render(text, &vars))?;
    }
    println!("created {} ({crate_name}, dc-plugin-sdk {})", out.display(), sdk_version());
    println!("app {}/{}/{} (app id {}) is registered with its first build", a.group, a.parent, a.name, app_id);
    println!("next:\n  cd {}\n  cargo test && cargo build --release", out.display());
    println!("  cp target/release/lib{}.so {}/ && dc-host reload", crate_name.replace('-', "_"), plugins_dir.display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crate_names_never_shadow_the_sdk_crates() {
        assert_eq!(crate_name("prices").expect("fine"), "dc-plugin-prices");
        assert_eq!(crate_name("my_app").expect("fine"), "dc-plugin-my-app");
        for taken in ["api", "sdk"] {
            let e = crate_name(taken).expect_err("taken").to_string();
            assert!(e.contains("the name of dc-host's own plugin crate"), "{e}");
        }
    }

    #[test]
    fn renders_placeholders_and_names() {
        assert_eq!(pascal("shop_prices"), "ShopPrices");
        assert_eq!(render("a {{x}} b {{x}}", &[("x", "1".into())]), "a 1 b 1");
        assert!(check("name", "Bad-Name", true).is_err());
        assert!(check("group", "eu-west", false).is_ok());
        assert!(sdk_version().split('.').count() == 3, "{}", sdk_version());
        assert_eq!(struct_name("self"), "SelfScraper");
        assert_eq!(struct_name("args"), "ArgsScraper");
        assert_eq!(struct_name("shop_titles"), "ShopTitlesScraper");
        for tricky in ["/a \"b\"\\c", "/x'y/z", "/n\nl"] {
            let parsed: toml::Table =
                toml::from_str(&format!("p = {}", toml_string(Path::new(tricky)))).expect("valid TOML");
            assert_eq!(parsed["p"].as_str(), Some(tricky), "{tricky:?} survives the round trip");
        }
        // every placeholder in the template is one scaffold fills in
        for (file, text) in TEMPLATE.iter().filter(|(f, _)| *f != "Cargo.lock") {
            let rendered = render(
                text,
                &[
                    ("crate_name", "c".into()),
                    ("lib_name", "c".into()),
                    ("struct_name", "C".into()),
                    ("group", "g".into()),
                    ("parent", "p".into()),
                    ("name", "n".into()),
                    ("table", "t".into()),
                    ("app_id", "i".into()),
                    ("sdk_path", "/x".into()),
                    ("sdk_version", "0".into()),
                    ("plugins_dir", "/p".into()),
                ],
            );
            assert!(!rendered.contains("{{"), "{file} has an unfilled placeholder");
        }
    }
}
