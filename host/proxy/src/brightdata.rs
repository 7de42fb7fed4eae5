//! BrightData's super-proxy, as BrightData documents it: every request goes
//! to one host (`brd.superproxy.io:22225`), and the proxy user name says
//! which zone and exit to use:
//!
//! ```text
//! brd-customer-<customer id>-zone-<zone>[-country-<cc>]-session-<session id>
//! ```
//!
//! with the zone's password. Requests with the same session id keep their
//! exit IP; a new session id gets a new exit. So rotation per request sends
//! every request with a fresh session id, and rotation per session keeps one
//! session id per collecting thread.

use async_trait::async_trait;

use crate::ProxyError;
use crate::endpoint::Endpoint;
use crate::provider::ProxyProvider;

/// The zone and exit options of a BrightData super-proxy.
#[derive(Clone)]
pub struct BrightData {
    /// Super-proxy `HOST:PORT`.
    pub host: String,
    /// Customer id.
    pub customer: String,
    /// Zone name.
    pub zone: String,
    /// Exit country (two-letter, lowercase).
    pub country: Option<String>,
    /// The zone's password.
    pub password: String,
    /// Sessions a run keeps for rotation per session.
    pub sessions: u32,
}

impl std::fmt::Debug for BrightData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrightData")
            .field("host", &self.host)
            .field("customer", &self.customer)
            .field("zone", &self.zone)
            .field("country", &self.country)
            .finish_non_exhaustive()
    }
}

/// A new random session id (`rand` and 10 decimal digits, as BrightData's
/// examples write them).
pub fn new_session_id() -> String {
    format!("rand{:010}", fastrand::u64(..10_000_000_000))
}

impl BrightData {
    /// The proxy user name for `session`.
    pub fn username(&self, session: &str) -> String {
        let country = self.country.as_deref().map(|c| format!("-country-{c}")).unwrap_or_default();
        format!("brd-customer-{}-zone-{}{country}-session-{session}", self.customer, self.zone)
    }

    /// The endpoint of one session.
    pub fn endpoint(&self, session: &str) -> Endpoint {
        Endpoint {
            url: format!("http://{}", self.host),
            username: Some(self.username(session)),
            password: Some(self.password.clone()),
            key: format!("brd:{}:{}:{session}", self.customer, self.zone),
        }
    }
}

#[async_trait]
impl ProxyProvider for BrightData {
    fn name(&self) -> &'static str {
        "brightdata"
    }

    async fn endpoints(&self) -> Result<Vec<Endpoint>, ProxyError> {
        Ok((0..self.sessions.max(1)).map(|_| self.endpoint(&new_session_id())).collect())
    }

    fn fresh(&self) -> Option<Endpoint> {
        Some(self.endpoint(&new_session_id()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone(country: Option<&str>) -> BrightData {
        BrightData {
            host: "brd.superproxy.io:22225".into(),
            customer: "hl_1a2b3c4d".into(),
            zone: "residential_1".into(),
            country: country.map(str::to_string),
            password: "zonepass".into(),
            sessions: 2,
        }
    }

    #[test]
    fn user_names_follow_brightdatas_documented_format() {
        assert_eq!(
            zone(Some("us")).username("rand39484"),
            "brd-customer-hl_1a2b3c4d-zone-residential_1-country-us-session-rand39484"
        );
        assert_eq!(zone(None).username("s1"), "brd-customer-hl_1a2b3c4d-zone-residential_1-session-s1");
        let e = zone(Some("de")).endpoint("abc");
        assert_eq!(e.url, "http://brd.superproxy.io:22225");
        assert_eq!(e.password.as_deref(), Some("zonepass"));
        assert_eq!(
            e.shown(),
            "http://brd-customer-hl_1a2b3c4d-zone-residential_1-country-de-session-abc@brd.superproxy.io:22225"
        );
    }

    #[test]
    fn every_fresh_endpoint_has_its_own_session() {
        let bd = zone(None);
        let ids: std::collections::BTreeSet<String> =
            (0..50).filter_map(|_| bd.fresh()).filter_map(|e| e.username).collect();
        assert_eq!(ids.len(), 50, "session ids repeat");
        let id = new_session_id();
        assert!(id.starts_with("rand") && id.len() == 14 && id[4..].chars().all(|c| c.is_ascii_digit()), "{id}");
    }
}
