//! `dc-fixture-site`: serves a directory of static files on loopback, used by
//! the demo (`scripts/demo.sh`) and the end-to-end tests to serve the bundled
//! catalogue site. It binds to 127.0.0.1 only and can write the chosen port to
//! a file. It is a separate binary so the operator binary `dc-host` carries no
//! HTTP server.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use tower_http::services::ServeDir;

/// Serve a directory of static files on 127.0.0.1 (the bundled fixture site).
#[derive(Parser)]
#[command(name = "dc-fixture-site", version, about, long_about = None)]
struct Args {
    /// Directory to serve.
    #[arg(long, default_value = "tests/fixtures/catalogue")]
    dir: PathBuf,
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
    if !a.dir.is_dir() {
        anyhow::bail!("{} is not a directory; pass --dir with the site to serve", a.dir.display());
    }
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], a.port))).await?;
    let port = listener.local_addr()?.port();
    if let Some(f) = &a.port_file {
        let tmp = f.with_extension("tmp");
        std::fs::write(&tmp, port.to_string())?;
        std::fs::rename(&tmp, f)?;
    }
    eprintln!("serving {} on http://127.0.0.1:{port}/", a.dir.display());
    let app = axum::Router::new().fallback_service(ServeDir::new(&a.dir));
    axum::serve(listener, app).await?;
    Ok(())
}
