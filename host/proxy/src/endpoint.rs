//! One proxy endpoint: where it listens, how to log in, and a stable key
//! that names it before its exit IP is known.

use crate::ProxyError;

/// A proxy endpoint.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `scheme://HOST:PORT`, without credentials.
    pub url: String,
    /// User name (BrightData: zone, country and session).
    pub username: Option<String>,
    /// Password (from the secrets store).
    pub password: Option<String>,
    /// What names this endpoint's exit until a judge tells its IP (`proxy:<url>`,
    /// or `brd:<zone>:<session>`).
    pub key: String,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never the password
        f.debug_struct("Endpoint").field("url", &self.url).field("username", &self.username).finish_non_exhaustive()
    }
}

impl Endpoint {
    /// A static endpoint without credentials.
    pub fn new(url: &str) -> Endpoint {
        let url = url.trim_end_matches('/').to_string();
        Endpoint { key: format!("proxy:{url}"), url, username: None, password: None }
    }

    /// With credentials.
    pub fn with_auth(mut self, username: Option<String>, password: Option<String>) -> Endpoint {
        self.username = username;
        self.password = password;
        self
    }

    /// How the endpoint appears in logs, stats and the reservation table:
    /// the URL with the user name, never the password.
    pub fn shown(&self) -> String {
        match (&self.username, self.url.split_once("://")) {
            (Some(u), Some((scheme, rest))) => format!("{scheme}://{u}@{rest}"),
            _ => self.url.clone(),
        }
    }

    /// The `reqwest` proxy for every request (plain HTTP is forwarded,
    /// HTTPS tunnelled with CONNECT), with basic authentication if set.
    pub fn to_reqwest(&self) -> Result<reqwest::Proxy, ProxyError> {
        let mut p = reqwest::Proxy::all(&self.url)
            .map_err(|e| ProxyError::Config(format!("invalid proxy {}: {e}", self.shown())))?;
        if let Some(u) = &self.username {
            p = p.basic_auth(u, self.password.as_deref().unwrap_or_default());
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_never_shows() {
        let e = Endpoint::new("http://10.1.2.3:3128/").with_auth(Some("u".into()), Some("hunter2".into()));
        assert_eq!(e.url, "http://10.1.2.3:3128");
        assert_eq!(e.key, "proxy:http://10.1.2.3:3128");
        assert_eq!(e.shown(), "http://u@10.1.2.3:3128");
        assert!(!format!("{e:?}").contains("hunter2"));
        assert!(e.to_reqwest().is_ok());
    }
}
