//! `dc_net::tls::client_builder`: the TLS configuration every client shares
//! still verifies certificates against the system's roots. A loopback TLS
//! server (tokio-rustls) presents a certificate made for 127.0.0.1 by
//! `openssl` that no root signed: the handshake reaches verification and the
//! client refuses it.

use std::process::Command;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::AsyncWriteExt;

use crate::bounded;

/// A self-signed certificate and key for 127.0.0.1, made by `openssl`.
fn self_signed(dir: &std::path::Path) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("run openssl (Debian's openssl package)");
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    let certs = CertificateDer::pem_file_iter(&cert).expect("cert file").collect::<Result<Vec<_>, _>>().expect("cert");
    (certs, PrivateKeyDer::from_pem_file(&key).expect("key"))
}

#[tokio::test]
async fn the_shared_tls_configuration_refuses_a_certificate_no_root_signed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (certs, key) = self_signed(dir.path());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("address").port();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.expect("accept");
        // the client aborts the handshake: what the server saw
        match acceptor.accept(tcp).await {
            Ok(mut tls) => {
                let _ = tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    });

    let client = dc_net::tls::client_builder().build().expect("client");
    let sent = bounded(client.get(format!("https://127.0.0.1:{port}/")).send()).await;
    let e = sent.expect_err("a certificate no root signed is refused");
    let why = dc_net::error_chain(&e);
    assert!(why.contains("invalid peer certificate") && why.contains("UnknownIssuer"), "{why}");
    let seen = bounded(server).await.expect("server task");
    assert!(seen.is_err_and(|e| e.contains("alert")), "the client ended the handshake with an alert");
}
