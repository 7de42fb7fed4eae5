//! `dc-fixture-site`: serves a directory of static files on loopback, used by
//! the demo (`scripts/demo.sh`) and the end-to-end tests to serve the bundled
//! catalogue site, or (`--generate PAGES`) a synthetic site of any size rendered
//! on request, for the crawl benchmark. It binds to 127.0.0.1 only and can write
//! the chosen port to a file. It is a separate binary so the operator binary
//! `dc-host` carries no HTTP server.

mod generate;

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use clap::Parser;
use tower_http::services::ServeDir;

use generate::{Page, Site};

/// Serve a directory of static files on 127.0.0.1 (the bundled fixture site), or a generated site.
#[derive(Parser)]
#[command(name = "dc-fixture-site", version, about, long_about = None)]
struct Args {
    /// Directory to serve.
    #[arg(long, default_value = "tests/fixtures/catalogue")]
    dir: PathBuf,
    /// Serve a generated site of exactly this many pages instead of a directory:
    /// `/` and `/list/K.html` list 20 items each, `/item/I.html` are the items,
    /// every page reachable from `/`; `/robots.txt` allows everything.
    #[arg(long, value_name = "PAGES", conflicts_with = "dir")]
    generate: Option<u64>,
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Write the chosen port to this file once listening.
    #[arg(long)]
    port_file: Option<PathBuf>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let site = a.generate.map(Site::new).transpose()?;
    if site.is_none() && !a.dir.is_dir() {
        anyhow::bail!("{} is not a directory; pass --dir with the site to serve", a.dir.display());
    }
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], a.port))).await?;
    let port = listener.local_addr()?.port();
    if let Some(f) = &a.port_file {
        let tmp = f.with_extension("tmp");
        std::fs::write(&tmp, port.to_string())?;
        std::fs::rename(&tmp, f)?;
    }
    let app = match site {
        Some(site) => {
            eprintln!("serving a generated site of {} pages on http://127.0.0.1:{port}/", site.pages());
            axum::Router::new().fallback(move |uri: Uri| async move { serve_generated(&site, &uri) })
        }
        None => {
            eprintln!("serving {} on http://127.0.0.1:{port}/", a.dir.display());
            axum::Router::new().fallback_service(ServeDir::new(&a.dir))
        }
    };
    // a file is sent as headers, then body chunks: without TCP_NODELAY, Nagle's
    // algorithm held each response's tail for the client's delayed ACK
    // (~40 ms per page, which capped a 4-thread crawl near 100 pages/s)
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await?;
    Ok(())
}

/// One page of the generated site.
fn serve_generated(site: &Site, uri: &Uri) -> Response {
    const HTML: (header::HeaderName, &str) = (header::CONTENT_TYPE, "text/html; charset=utf-8");
    match site.route(uri.path()) {
        Page::Listing(k) => ([HTML], site.listing(k)).into_response(),
        Page::Item(i) => ([HTML], site.item(i)).into_response(),
        Page::Robots => ([(header::CONTENT_TYPE, "text/plain")], "User-agent: *\nAllow: /\n").into_response(),
        Page::NotFound => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}
