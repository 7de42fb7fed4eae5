//! `dc-test-proxy`: the loopback forward proxy of `dc_e2e::proxy` as a
//! program, for the proxy benchmark (`scripts/bench-proxies.py`). Prints its
//! URL on stdout once it listens, then serves until killed.
//!
//!     dc-test-proxy [--name NAME] [--bind-out 127.0.0.2] [--port PORT]

use std::io::Write;

use dc_e2e::proxy::{ProxyConfig, TestProxy};

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut name, mut bind_out, mut port) = ("proxy".to_string(), "127.0.0.1".to_string(), 0u16);
    while let Some(a) = args.next() {
        let value = args.next().unwrap_or_default();
        match a.as_str() {
            "--name" => name = value,
            "--bind-out" => bind_out = value,
            "--port" => port = value.parse().unwrap_or_else(|_| usage(&format!("--port {value:?} is not a port"))),
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    if bind_out.parse::<std::net::IpAddr>().is_err() {
        usage(&format!("--bind-out {bind_out:?} is not an IP address"));
    }
    let proxy = TestProxy::start_on(ProxyConfig::new(&name, &bind_out), port);
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{}", proxy.url);
    let _ = out.flush();
    loop {
        std::thread::park();
    }
}

fn usage(problem: &str) -> ! {
    eprintln!("dc-test-proxy: {problem}\nusage: dc-test-proxy [--name NAME] [--bind-out IP] [--port PORT]");
    std::process::exit(2);
}
