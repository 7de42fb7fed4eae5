//! Where a run's proxies come from: the [`ProxyProvider`] trait, the static
//! provider (`proxy.urls` and `proxy.file`), and the provider the settings
//! configure.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use dc_core::settings::{ProxyProviderKind, ProxySettings, check_proxy_url};

use crate::ProxyError;
use crate::brightdata::BrightData;
use crate::endpoint::Endpoint;

/// Gives proxy endpoints to a run.
#[async_trait]
pub trait ProxyProvider: Send + Sync + std::fmt::Debug {
    /// Its name, for logs.
    fn name(&self) -> &'static str;

    /// The endpoints a run may use, in preference order; the run verifies
    /// and reserves them before it uses any.
    async fn endpoints(&self) -> Result<Vec<Endpoint>, ProxyError>;

    /// A new endpoint for a single request, for providers whose exits come
    /// from a pool behind one address (BrightData: a new session id); none:
    /// rotation per request goes round the run's endpoints.
    fn fresh(&self) -> Option<Endpoint> {
        None
    }
}

/// A fixed list of proxies: `proxy.urls`, then the lines of `proxy.file`.
#[derive(Clone)]
pub struct StaticProvider {
    urls: Vec<String>,
    file: Option<PathBuf>,
    username: Option<String>,
    password: Option<String>,
}

impl std::fmt::Debug for StaticProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticProvider").field("urls", &self.urls).field("file", &self.file).finish_non_exhaustive()
    }
}

impl StaticProvider {
    /// A provider of `urls` (and the lines of `file`), all with the same credentials.
    pub fn new(urls: Vec<String>, file: Option<PathBuf>, username: Option<String>, password: Option<String>) -> Self {
        StaticProvider { urls, file, username, password }
    }
}

/// Parses a proxy file: one URL per line; blank lines and `#` comments are
/// skipped; a bad line is refused naming the file and line.
pub fn parse_proxy_file(path: &std::path::Path, text: &str) -> Result<Vec<String>, ProxyError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        check_proxy_url(line)
            .map_err(|why| ProxyError::Config(format!("proxy file {} line {}: {why}", path.display(), i + 1)))?;
        out.push(line.to_string());
    }
    Ok(out)
}

#[async_trait]
impl ProxyProvider for StaticProvider {
    fn name(&self) -> &'static str {
        "static"
    }

    async fn endpoints(&self) -> Result<Vec<Endpoint>, ProxyError> {
        let mut urls = self.urls.clone();
        if let Some(path) = &self.file {
            let text = tokio::fs::read_to_string(path).await.map_err(|e| {
                ProxyError::Config(format!("cannot read the proxy file {} (proxy.file): {e}", path.display()))
            })?;
            urls.extend(parse_proxy_file(path, &text)?);
        }
        let mut seen = std::collections::BTreeSet::new();
        urls.retain(|u| seen.insert(u.trim_end_matches('/').to_string()));
        if urls.is_empty() {
            return Err(ProxyError::Config("no proxies are configured: list them in proxy.urls or proxy.file".into()));
        }
        Ok(urls.iter().map(|u| Endpoint::new(u).with_auth(self.username.clone(), self.password.clone())).collect())
    }
}

/// The provider `settings` configure (validated by `dc_core::Settings`;
/// the password is already resolved from the secrets store).
pub fn provider_from_settings(s: &ProxySettings) -> Result<Arc<dyn ProxyProvider>, ProxyError> {
    if s.password.as_deref().is_some_and(|p| p.contains("${secret:")) {
        return Err(ProxyError::Config(
            "proxy.password still holds a ${secret:…} reference: the host did not resolve it (is the secrets store readable?)".into(),
        ));
    }
    Ok(match s.provider {
        ProxyProviderKind::Static => {
            Arc::new(StaticProvider::new(s.urls.clone(), s.file.clone(), s.username.clone(), s.password.clone()))
        }
        ProxyProviderKind::Brightdata => {
            let need = |v: &Option<String>, key: &str| {
                v.clone()
                    .ok_or_else(|| ProxyError::Config(format!("proxy.{key} is not set (provider = \"brightdata\")")))
            };
            Arc::new(BrightData {
                host: s.brightdata_host.clone(),
                customer: need(&s.brightdata_customer, "brightdata_customer")?,
                zone: need(&s.brightdata_zone, "brightdata_zone")?,
                country: s.brightdata_country.clone(),
                password: need(&s.password, "password")?,
                sessions: s.brightdata_sessions,
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_proxy_file_adds_to_the_list_and_a_bad_line_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("proxies.txt");
        std::fs::write(&path, "# office proxies\nhttp://10.0.0.1:3128\n\nsocks5://10.0.0.2:1080  # the socks one\nhttp://10.0.0.1:3128/\n")
            .expect("write");
        let p = StaticProvider::new(
            vec!["https://10.0.0.9:443".into()],
            Some(path.clone()),
            Some("u".into()),
            Some("p".into()),
        );
        let e = p.endpoints().await.expect("endpoints");
        let urls: Vec<&str> = e.iter().map(|e| e.url.as_str()).collect();
        assert_eq!(urls, ["https://10.0.0.9:443", "http://10.0.0.1:3128", "socks5://10.0.0.2:1080"], "deduplicated");
        assert!(e.iter().all(|e| e.username.as_deref() == Some("u")));

        std::fs::write(&path, "http://10.0.0.1:3128\nhttp://user:pw@10.0.0.3:3128\n").expect("write");
        let err = p.endpoints().await.expect_err("credentials in a URL are refused").to_string();
        assert!(err.contains("proxies.txt line 2") && err.contains("secrets store"), "{err}");
        assert!(!err.contains("pw@"), "{err}");

        let missing = StaticProvider::new(vec![], Some(dir.path().join("nope.txt")), None, None);
        let err = missing.endpoints().await.expect_err("missing file").to_string();
        assert!(err.contains("nope.txt") && err.contains("proxy.file"), "{err}");
    }
}
