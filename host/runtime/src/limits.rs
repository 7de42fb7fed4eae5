//! The politeness limiter as runs use it: the settings' `[limits]` turned into
//! `dc_net`'s configuration, the permit server that every supervising process
//! offers to serve (one per machine wins, see `dc_net::permit_server`), and
//! the limiter a worker's requests go through (the server whose socket its
//! supervisor passed in [`SOCKET_ENV`], else its own).

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use dc_core::Settings;
use dc_net::{HostLimiter, LimitConfig, Tuning};

/// The variable a supervisor passes its worker the permit socket in.
pub const SOCKET_ENV: &str = "DC_LIMITER_SOCKET";

/// `[limits]` as the limiter's configuration.
pub fn limit_config(settings: &Settings) -> LimitConfig {
    let l = &settings.limits;
    let rate = |r: f64| (r > 0.0).then_some(r);
    let default = Tuning {
        rps: rate(l.default_rps),
        concurrency: l.default_concurrency,
        adaptive: l.adaptive,
        target_concurrency: l.target_concurrency,
        max_block: Duration::from_secs(l.max_block_secs),
    };
    let loopback = Tuning { rps: None, concurrency: u32::MAX, ..default.clone() };
    let domains = l
        .domain
        .iter()
        .map(|d| {
            let tuning = Tuning {
                rps: d.rps.map_or(default.rps, rate),
                concurrency: d.concurrency.unwrap_or(default.concurrency),
                ..default.clone()
            };
            (d.host.trim().to_ascii_lowercase(), tuning)
        })
        .collect();
    LimitConfig {
        default,
        loopback,
        domains,
        robots_ttl: Duration::from_secs(l.robots_ttl_secs),
        // the same breaker as each run's, kept by the permit server for every run
        breaker: dc_net::BreakerPolicy {
            failures: settings.runs.breaker_failures,
            cooldown: Duration::from_secs(settings.runs.breaker_cooldown_secs),
        },
        leases: l.leases,
        ..LimitConfig::default()
    }
}

/// The permit server's socket: `limits.socket`, or `<data_dir>/run/limiter.sock`.
pub fn socket_path(settings: &Settings) -> PathBuf {
    settings.limits.socket.clone().unwrap_or_else(|| dc_net::default_socket(&settings.general.data_dir))
}

/// Makes this (supervising) process take part in serving the machine's
/// permit server, once, and returns the socket its workers should use; None
/// when it cannot (the workers then limit on their own). Call inside the
/// tokio runtime.
pub fn permit_socket(settings: &Settings) -> Option<PathBuf> {
    static STARTED: OnceLock<Option<PathBuf>> = OnceLock::new();
    STARTED
        .get_or_init(|| {
            let path = socket_path(settings);
            let handle = tokio::runtime::Handle::try_current().ok()?;
            match dc_net::serve_shared(&path, limit_config(settings), handle) {
                Ok(_) => Some(path),
                Err(e) => {
                    tracing::warn!(socket = %path.display(), error = %e, "cannot take part in serving politeness permits; each run limits its requests on its own");
                    None
                }
            }
        })
        .clone()
}

/// The limiter of a worker running `app` (`group/parent/name`).
pub fn worker_limiter(settings: &Settings, app: &str) -> HostLimiter {
    let socket = std::env::var_os(SOCKET_ENV).map(PathBuf::from);
    let opt_out = format!(
        "to fetch it anyway, opt this app out with limits.robots_ignore_apps = [\"{app}\"] in the host's configuration (or limits.obey_robots = false for every app)"
    );
    HostLimiter::new(socket, limit_config(settings), settings.limits.obeys_robots(app), opt_out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_become_the_limiters_configuration() {
        let mut s = Settings::default();
        s.limits.default_rps = 0.0;
        s.limits.domain.push(dc_core::settings::DomainLimit {
            host: "Example.COM".into(),
            rps: Some(2.0),
            concurrency: None,
        });
        let c = limit_config(&s);
        assert_eq!(c.default.rps, None, "0: no rate limit");
        assert_eq!(c.tuning("example.com").rps, Some(2.0));
        assert_eq!(c.tuning("example.com").concurrency, s.limits.default_concurrency);
        assert_eq!(c.tuning("127.0.0.1").rps, None);
        assert_eq!(socket_path(&s), s.general.data_dir.join("run/limiter.sock"));
        assert_eq!(c.breaker.failures, s.runs.breaker_failures, "the host-wide breaker follows [runs]");
        assert!(c.leases);
        s.limits.leases = false;
        assert!(!limit_config(&s).leases, "limits.leases = false reaches the permit server");
    }
}
