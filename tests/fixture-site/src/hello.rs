//! `dc-bench-hello`: an axum hello-world on 127.0.0.1, the baseline of the API
//! benchmark (`scripts/bench-api.sh`). Same axum, the same tokio runtime as
//! `dc-host serve` (multi-threaded, 2 workers) and the same `axum::serve` call
//! with the peer address and `TCP_NODELAY` on each connection, so the only
//! difference to `GET /api/v1/apps` is the API's own work (authentication,
//! role check, the database read, JSON).

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::serve::ListenerExt as _;
use clap::Parser;

/// Answer every GET with "Hello, World!" on 127.0.0.1.
#[derive(Parser)]
#[command(name = "dc-bench-hello", version, about, long_about = None)]
struct Args {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Write the chosen port to this file once listening.
    #[arg(long)]
    port_file: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], a.port))).await?;
        let port = listener.local_addr()?.port();
        if let Some(f) = &a.port_file {
            let tmp = f.with_extension("tmp");
            std::fs::write(&tmp, port.to_string())?;
            std::fs::rename(&tmp, f)?;
        }
        eprintln!("hello on http://127.0.0.1:{port}/");
        let app = axum::Router::new().fallback(|| async { "Hello, World!" });
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await?;
        anyhow::Ok(())
    })
}
