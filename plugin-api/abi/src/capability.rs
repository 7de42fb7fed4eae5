//! Capability names: what a host can do for a plugin. A plugin's manifest lists
//! what it `requires`; registration refuses a plugin that requires one the host
//! does not implement, naming it. The host publishes its own list through
//! `dc-host interface` and [`crate::abi::HostCallbacks::capabilities`].
//!
//! New names are added in minor versions; a name is never reused or removed.

/// HTTP requests through the host's sessions.
pub const FETCH: &str = "fetch";
/// Merging rows into declared tables.
pub const MERGE: &str = "merge";
/// Structured logging.
pub const LOG: &str = "log";
/// Progress reporting.
pub const PROGRESS: &str = "progress";
/// Proxies of the run, offered when the host has `[proxy]` configured; since
/// 1.4 the host methods `proxy.current`, `proxy.rotate` and `proxy.report`.
pub const PROXY: &str = "proxy";
/// CAPTCHA solving by the host: the host methods `captcha.solve` and
/// `captcha.balance` ([`crate::host_call`], interface 1.3). A host offers it
/// only when a solver is configured.
pub const CAPTCHA: &str = "captcha";
/// Request metrics kept by the host.
pub const METRICS: &str = "metrics";
/// Document processing (PDF text, OCR, entities).
pub const DOCUMENTS: &str = "documents";
/// Since 1.2: a crawl frontier — `collect` adds work items while the run goes
/// on ([`crate::abi::HostCallbacks::enqueue`]).
pub const FRONTIER: &str = "frontier";

/// Since 1.4: the host's HTTP controls — session setters (cookies into the
/// thread's jar, basic and bearer credentials, `keep_headers`,
/// `clear_proxy` in [`crate::SessionConfig`]), the per-request options
/// `retries`, `follow_redirects` and `proxy` ([`crate::RequestOptions`]) and
/// failed requests tagged with their [`crate::ErrorClass`].
pub const HTTP: &str = "http";

/// Every capability name this interface version defines, implemented or not.
pub const KNOWN: &[&str] = &[FETCH, MERGE, LOG, PROGRESS, PROXY, CAPTCHA, METRICS, DOCUMENTS, FRONTIER, HTTP];

/// What every host of interface 1.0 implements.
pub const INTERFACE_1_0: &[&str] = &[FETCH, MERGE, LOG, PROGRESS];

/// [`INTERFACE_1_0`] as a JSON array (the fallback answer of an older host).
pub const INTERFACE_1_0_JSON: &str = r#"["fetch","merge","log","progress"]"#;

/// Whether `name` is a capability this interface version defines.
pub fn is_known(name: &str) -> bool {
    KNOWN.contains(&name)
}

/// The capabilities in `required` that `implemented` lacks, in order.
pub fn missing<'a>(required: &'a [String], implemented: &[&str]) -> Vec<&'a str> {
    required.iter().map(String::as_str).filter(|r| !implemented.contains(r)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fallback_json_matches_the_list() {
        let parsed: Vec<String> = serde_json::from_str(INTERFACE_1_0_JSON).expect("valid JSON");
        assert_eq!(parsed, INTERFACE_1_0);
        assert!(INTERFACE_1_0.iter().all(|c| is_known(c)));
    }

    #[test]
    fn missing_names_what_is_absent() {
        let req = vec!["fetch".to_string(), "proxy".to_string(), "captcha".to_string()];
        assert_eq!(missing(&req, INTERFACE_1_0), vec!["proxy", "captcha"]);
        assert!(missing(&[], INTERFACE_1_0).is_empty());
    }
}
