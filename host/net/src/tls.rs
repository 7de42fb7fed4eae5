//! One TLS configuration for every HTTP client of the process.
//!
//! Building a `reqwest::Client` builds its TLS configuration, and with
//! reqwest's platform verifier that reads and parses the system's root
//! certificates: about 2.7 ms of CPU per client on the reference machine,
//! against microseconds for the rest of the build. A collecting thread keeps
//! a client per proxy and redirect setting, and a new exit per request gets
//! a client per request, so [`client_builder`] starts every client from one
//! configuration made once per process (same verifier, provider, protocol
//! versions and ALPN as reqwest's own).

use std::sync::{Arc, OnceLock};

static SHARED: OnceLock<Option<rustls::ClientConfig>> = OnceLock::new();

/// The process's TLS configuration, or none when it cannot be made (then
/// each client makes its own, and reports the same problem when built).
fn shared() -> Option<&'static rustls::ClientConfig> {
    SHARED
        .get_or_init(|| {
            let provider = rustls::crypto::CryptoProvider::get_default()
                .cloned()
                .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
            let verifier = match rustls_platform_verifier::Verifier::new(provider.clone()) {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot load the system's root certificates once for all HTTP clients; each client loads them itself");
                    return None;
                }
            };
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .ok()?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth();
            // reqwest's own for HTTP/1 only (the `http2` feature is off)
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some(config)
        })
        .as_ref()
}

/// A `reqwest::ClientBuilder` with the process's TLS configuration: use it
/// for every client whose TLS settings are the defaults (certificates
/// verified against the system's roots).
pub fn client_builder() -> reqwest::ClientBuilder {
    let b = reqwest::Client::builder();
    match shared() {
        Some(config) => b.tls_backend_preconfigured(config.clone()),
        None => b,
    }
}
