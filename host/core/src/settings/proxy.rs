//! The `[proxy]` section: which apps' requests go through proxies, where the
//! proxies come from (a static list or BrightData's super-proxy), how they
//! rotate, the judges that tell each proxy's exit IP, and when a proxy is
//! banned or retired. Credentials only come from the secrets store.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::SettingsError;

/// Where a run's proxies come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProviderKind {
    /// `urls` and/or `file`.
    #[default]
    Static,
    /// BrightData's super-proxy (`brightdata_*`).
    Brightdata,
}

/// How requests move between proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProxyRotate {
    /// Each request takes the next proxy (BrightData: a new session id).
    #[default]
    Request,
    /// Each collecting thread keeps its proxy until it is retired.
    Session,
}

/// Proxies for plugin requests (`[proxy]`, `DC_PROXY_*`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySettings {
    /// Apps whose requests go through proxies: `group/parent/name` paths, or
    /// `"*"` for every app. Empty (the default): no app uses proxies.
    pub apps: Vec<String>,
    /// `static` (`urls`, `file`) or `brightdata`.
    pub provider: ProxyProviderKind,
    /// Static proxies: `http://`, `https://`, `socks5://` or `socks5h://`
    /// `HOST:PORT` URLs, without credentials (see `username`, `password`).
    pub urls: Vec<String>,
    /// Static proxies from a file, one URL per line (`#` comments and blank
    /// lines skipped), read when a run starts; adds to `urls`.
    pub file: Option<PathBuf>,
    /// The user name the static proxies want (none: no authentication).
    pub username: Option<String>,
    /// The proxies' password, only as a secrets-store reference:
    /// `password = "${secret:proxy_password}"`.
    pub password: Option<String>,
    /// `request` (each request takes the next proxy) or `session` (each
    /// collecting thread keeps its proxy).
    pub rotate: ProxyRotate,
    /// Per-app rotation: `"group/parent/name" = "session"`.
    pub app_rotate: BTreeMap<String, ProxyRotate>,
    /// Proxy judges: URLs that answer with the caller's IP address (plain
    /// text, or JSON with `ip` or `origin`). When set, every proxy's exit IP
    /// is learned through them before a run uses it (the next judge is tried
    /// when one fails) and the exit IP is what the run reserves; a proxy no
    /// judge answers through is not used.
    pub judges: Vec<String>,
    /// Statuses answered through a proxy that count as a ban (so do
    /// CAPTCHA and challenge pages).
    pub ban_statuses: Vec<u16>,
    /// A proxy whose health score (1.0 at the start; a ban halves it, a
    /// failed connection takes 30 %, a good answer wins back 20 % of the
    /// way to 1.0) falls below this is retired for the rest of the run.
    pub retire_below: f64,
    /// A reservation nobody released expires after this many seconds
    /// (default: `runs.time_limit_secs` + `runs.stop_grace_secs` + 60,
    /// when its run is certainly over).
    pub reservation_ttl_secs: Option<u64>,
    /// BrightData super-proxy `HOST:PORT`.
    pub brightdata_host: String,
    /// BrightData customer id (the `hl_…` of `brd-customer-hl_…`).
    pub brightdata_customer: Option<String>,
    /// BrightData zone name.
    pub brightdata_zone: Option<String>,
    /// Exit country (two-letter code, e.g. `us`); none: any.
    pub brightdata_country: Option<String>,
    /// Sessions (exits) a run keeps for `rotate = "session"`.
    pub brightdata_sessions: u32,
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            apps: Vec::new(),
            provider: ProxyProviderKind::Static,
            urls: Vec::new(),
            file: None,
            username: None,
            password: None,
            rotate: ProxyRotate::Request,
            app_rotate: BTreeMap::new(),
            judges: Vec::new(),
            ban_statuses: vec![403, 429],
            retire_below: 0.2,
            reservation_ttl_secs: None,
            brightdata_host: "brd.superproxy.io:22225".into(),
            brightdata_customer: None,
            brightdata_zone: None,
            brightdata_country: None,
            brightdata_sessions: 4,
        }
    }
}

/// The proxy URL schemes accepted.
pub const PROXY_SCHEMES: &[&str] = &["http", "https", "socks5", "socks5h"];

/// Checks one proxy URL: a known scheme, a host and port, no credentials;
/// the error says what is wrong.
pub fn check_proxy_url(url: &str) -> Result<(), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("not a URL; write it like \"http://HOST:PORT\"".into());
    };
    if !PROXY_SCHEMES.contains(&scheme) {
        return Err(format!("scheme {scheme:?} is not one of {}", PROXY_SCHEMES.join(", ")));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err("credentials do not go into the URL: set proxy.username, and keep the password in the secrets store (password = \"${secret:NAME}\")".into());
    }
    let port = authority.rsplit_once(':').map(|(_, p)| p);
    if authority.is_empty() || port.is_none_or(|p| p.parse::<u16>().is_err()) {
        return Err("it needs a host and a port, like \"http://HOST:PORT\"".into());
    }
    Ok(())
}

impl ProxySettings {
    /// Whether the app at `path` (`group/parent/name`) uses proxies.
    pub fn applies_to(&self, path: &str) -> bool {
        self.apps.iter().any(|a| a == "*" || a == path)
    }

    /// The rotation for the app at `path`.
    pub fn rotate_for(&self, path: &str) -> ProxyRotate {
        self.app_rotate.get(path).copied().unwrap_or(self.rotate)
    }

    pub(super) fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |key: &str, value: String, allowed: &str| {
            Err(SettingsError::Invalid { key: format!("proxy.{key}"), value, allowed: allowed.into() })
        };
        for (i, u) in self.urls.iter().enumerate() {
            if let Err(why) = check_proxy_url(u) {
                return invalid(&format!("urls[{i}]"), super::redact_url(u), &why);
            }
        }
        for (i, j) in self.judges.iter().enumerate() {
            if !(j.starts_with("http://") || j.starts_with("https://")) {
                return invalid(
                    &format!("judges[{i}]"),
                    j.clone(),
                    "an http:// or https:// URL that answers with the caller's IP",
                );
            }
        }
        for (i, a) in self.apps.iter().enumerate() {
            if a != "*" && a.split('/').filter(|p| !p.is_empty()).count() != 3 {
                return invalid(
                    &format!("apps[{i}]"),
                    a.clone(),
                    "an app path group/parent/name, or \"*\" for every app",
                );
            }
        }
        if let Some(p) = &self.password
            && !p.contains("${secret:")
        {
            return invalid(
                "password",
                "<redacted>".into(),
                "proxy credentials only come from the secrets store: `dc-host secrets set proxy_password`, then password = \"${secret:proxy_password}\"",
            );
        }
        if !(0.0..1.0).contains(&self.retire_below) {
            return invalid(
                "retire_below",
                self.retire_below.to_string(),
                "0.0 (never retire) up to, not including, 1.0",
            );
        }
        if let Some(s) = self.ban_statuses.iter().find(|s| !(100..=599).contains(*s)) {
            return invalid("ban_statuses", s.to_string(), "HTTP statuses (100 to 599), e.g. [403, 429]");
        }
        if self.reservation_ttl_secs == Some(0) {
            return invalid("reservation_ttl_secs", "0".into(), "at least 1 second, or unset");
        }
        if self.apps.is_empty() {
            return Ok(());
        }
        match self.provider {
            ProxyProviderKind::Static => {
                if self.urls.is_empty() && self.file.is_none() {
                    return invalid(
                        "urls",
                        "[]".into(),
                        "list the proxies in proxy.urls or proxy.file, or set proxy.apps = [] to use none",
                    );
                }
                if self.password.is_some() && self.username.is_none() {
                    return invalid("username", "none".into(), "set the user name the password belongs to");
                }
            }
            ProxyProviderKind::Brightdata => {
                for (key, v) in
                    [("brightdata_customer", &self.brightdata_customer), ("brightdata_zone", &self.brightdata_zone)]
                {
                    match v.as_deref() {
                        None | Some("") => {
                            return invalid(key, "none".into(), "set it as shown in the BrightData control panel");
                        }
                        Some(v) if !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                            return invalid(
                                key,
                                v.into(),
                                "letters, digits and _ only (it goes into the proxy user name)",
                            );
                        }
                        Some(_) => {}
                    }
                }
                if let Some(c) = &self.brightdata_country
                    && !(c.len() == 2 && c.chars().all(|c| c.is_ascii_lowercase()))
                {
                    return invalid(
                        "brightdata_country",
                        c.clone(),
                        "a two-letter lowercase country code, e.g. \"us\"",
                    );
                }
                if self.password.is_none() {
                    return invalid(
                        "password",
                        "none".into(),
                        "the zone's password from the secrets store: password = \"${secret:brightdata_password}\"",
                    );
                }
                if self.brightdata_sessions == 0 {
                    return invalid("brightdata_sessions", "0".into(), "at least 1");
                }
                if check_proxy_url(&format!("http://{}", self.brightdata_host)).is_err() {
                    return invalid(
                        "brightdata_host",
                        self.brightdata_host.clone(),
                        "HOST:PORT, e.g. \"brd.superproxy.io:22225\"",
                    );
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Settings;
    use super::*;

    fn load(env: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        Settings::load(None, env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    fn refused(env: &[(&str, &str)], key: &str) -> String {
        let e = load(env).expect_err("refused").to_string();
        assert!(e.contains(key), "{e}");
        e
    }

    #[test]
    fn proxies_load_from_the_environment_and_apply_to_the_apps_named() {
        let s = load(&[
            ("DC_PROXY_APPS", "a/b/c, x/y/z"),
            ("DC_PROXY_URLS", "http://10.0.0.1:3128,socks5://10.0.0.2:1080"),
            ("DC_PROXY_JUDGES", "http://judge.example/ip"),
            ("DC_PROXY_ROTATE", "session"),
            ("DC_PROXY_USERNAME", "u"),
            ("DC_PROXY_PASSWORD", "${secret:proxy_pw}"),
        ])
        .expect("loads");
        let p = &s.proxy;
        assert_eq!(p.urls, ["http://10.0.0.1:3128", "socks5://10.0.0.2:1080"]);
        assert!(p.applies_to("x/y/z") && !p.applies_to("a/b/d"));
        assert_eq!(p.rotate_for("a/b/c"), ProxyRotate::Session);
        assert!(s.to_redacted_toml().contains("password = \"${secret:proxy_pw}\""));
        // nothing is proxied by default
        assert!(!load(&[]).expect("defaults").proxy.applies_to("a/b/c"));
    }

    #[test]
    fn bad_proxy_settings_are_refused_naming_the_key() {
        let apps = ("DC_PROXY_APPS", "*");
        let e = refused(&[apps, ("DC_PROXY_URLS", "http://u:hunter2@10.0.0.1:3128")], "proxy.urls[0]");
        assert!(e.contains("secrets store") && !e.contains("hunter2"), "{e}");
        refused(&[apps, ("DC_PROXY_URLS", "ftp://10.0.0.1:21")], "proxy.urls[0]");
        refused(&[apps, ("DC_PROXY_URLS", "http://10.0.0.1")], "proxy.urls[0]");
        refused(&[apps], "proxy.urls");
        let e = refused(
            &[apps, ("DC_PROXY_URLS", "http://h:1"), ("DC_PROXY_USERNAME", "u"), ("DC_PROXY_PASSWORD", "hunter2")],
            "proxy.password",
        );
        assert!(!e.contains("hunter2"), "{e}");
        refused(&[("DC_PROXY_APPS", "just-a-name")], "proxy.apps[0]");
        refused(&[("DC_PROXY_RETIRE_BELOW", "1.5")], "proxy.retire_below");
        refused(&[("DC_PROXY_JUDGES", "judge.example")], "proxy.judges[0]");
        let bd = [
            apps,
            ("DC_PROXY_PROVIDER", "brightdata"),
            ("DC_PROXY_BRIGHTDATA_CUSTOMER", "hl_1"),
            ("DC_PROXY_BRIGHTDATA_ZONE", "z"),
        ];
        refused(&bd, "proxy.password");
        let mut bad_zone = bd.to_vec();
        bad_zone[3] = ("DC_PROXY_BRIGHTDATA_ZONE", "z-1");
        refused(&bad_zone, "proxy.brightdata_zone");
        let mut ok = bd.to_vec();
        ok.push(("DC_PROXY_PASSWORD", "${secret:brd}"));
        ok.push(("DC_PROXY_BRIGHTDATA_COUNTRY", "US"));
        refused(&ok, "proxy.brightdata_country");
        ok.pop();
        let s = load(&ok).expect("loads");
        assert_eq!(s.proxy.brightdata_host, "brd.superproxy.io:22225");
    }
}
