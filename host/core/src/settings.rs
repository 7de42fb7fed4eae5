//! The one typed, versioned configuration: a TOML file (`--config FILE` or
//! `DC_CONFIG`) overlaid with `DC_<SECTION>_<KEY>` environment variables, parsed
//! once and validated at start. Unknown keys and invalid values are refused with
//! a message naming the key, the value and what is allowed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::enums::UnicodeForm;

mod proxy;
pub use proxy::{ProxyProviderKind, ProxyRotate, ProxySettings, check_proxy_url};

/// The smallest `runs.memory_limit_mb` accepted: below it a worker cannot start.
pub const MIN_WORKER_MEMORY_MB: u64 = 512;

/// The configuration format version this build reads.
pub const CONFIG_VERSION: u32 = 1;

/// The sections of the configuration (`DC_<SECTION>_<KEY>`).
const SECTIONS: &[&str] =
    &["general", "database", "logging", "runs", "limits", "notify", "broker", "auth", "api", "proxy", "captcha"];

/// Environment variables with the `DC_` prefix that are not settings.
/// (`DC_LIMITER_SOCKET` is how a supervisor tells its worker the permit
/// server's socket.)
const NON_SETTING_VARS: &[&str] = &["DC_CONFIG", "DC_SECRETS_KEY", "DC_LOG", "DC_LIMITER_SOCKET"];

/// A configuration problem; the message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file or an override does not parse or names an unknown key.
    #[error("invalid configuration in {origin}: {message}")]
    Parse {
        /// Where it came from (file name or environment variable).
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid setting {key} = {value}: {allowed}")]
    Invalid {
        /// Dotted key.
        key: String,
        /// The value given.
        value: String,
        /// What is allowed.
        allowed: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Must be 1.
    pub config_version: u32,
    /// Paths and identity.
    pub general: GeneralSettings,
    /// Database connection.
    pub database: DatabaseSettings,
    /// Logging sinks.
    pub logging: LogSettings,
    /// How runs execute.
    pub runs: RunSettings,
    /// Politeness: per-domain request limits shared by every run on the
    /// machine, and robots.txt.
    pub limits: LimitSettings,
    /// Where alerts go (`dc-host serve`).
    pub notify: NotifySettings,
    /// The control plane's token authority (`dc-auth`).
    pub auth: AuthSettings,
    /// The REST API (`dc_api`).
    pub api: ApiSettings,
    /// RabbitMQ for operator commands (optional; none: commands go through
    /// the database only).
    pub broker: BrokerSettings,
    /// Proxies for plugin requests (`dc-proxy`).
    pub proxy: ProxySettings,
    /// CAPTCHA solving offered to plugins (optional; none: the host does not
    /// offer the `captcha` capability).
    pub captcha: CaptchaSettings,
    /// What loading noticed but did not refuse (an unrelated `DC_*` variable),
    /// for the caller to show. Not part of the configuration.
    #[serde(skip)]
    pub warnings: Vec<String>,
}

/// Paths and identity.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeneralSettings {
    /// Where the host keeps its database, plugin store, secrets and logs.
    pub data_dir: PathBuf,
    /// Where operators drop plugin files (default `<data_dir>/plugins`).
    pub plugins_dir: Option<PathBuf>,
    /// Name recorded on runs (default: the machine's host name).
    pub host_name: Option<String>,
    /// Plugin files larger than this many MiB are refused before they are read.
    pub max_plugin_file_mb: u64,
}

/// Database connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// `sqlite://PATH` or `postgres://USER@HOST:PORT/DB` (default: SQLite under data_dir).
    /// May reference secrets as `${secret:NAME}`.
    pub url: Option<String>,
    /// Pool size.
    pub max_connections: u32,
    /// Seconds to wait for a connection.
    pub connect_timeout_secs: u64,
    /// Seconds SQLite waits for another writer before giving up.
    pub busy_timeout_secs: u64,
}

/// Logging sinks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub level: String,
    /// Write log records to the `logs` table.
    pub database: bool,
    /// Records buffered for the database before new ones are dropped (and counted).
    pub buffer: usize,
    /// File that receives records when a sink is down (default `<data_dir>/logs/fallback.jsonl`).
    pub fallback_file: Option<PathBuf>,
    /// Splunk HTTP Event Collector endpoint (e.g. `https://splunk:8088/services/collector/event`).
    pub splunk_url: Option<String>,
    /// Splunk HEC token; reference a secret: `${secret:splunk_token}`.
    pub splunk_token: Option<String>,
}

/// How runs execute.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSettings {
    /// Threads calling `collect` concurrently.
    pub threads: usize,
    /// A run still going after this many seconds is killed and marked FAILED.
    pub time_limit_secs: u64,
    /// After a stop request (Ctrl-C, `runs stop` from a shutting-down host), a
    /// worker gets this many seconds to stop on its own before its process
    /// group is killed.
    pub stop_grace_secs: u64,
    /// Address-space limit for a worker, in MiB (none by default).
    pub memory_limit_mb: Option<u64>,
    /// CPU-time limit for a worker, in seconds (none by default).
    pub cpu_limit_secs: Option<u64>,
    /// Default HTTP timeout for plugin requests.
    pub http_timeout_secs: u64,
    /// Retries of a plugin request answered 429/502/503/504, or that timed
    /// out or lost its connection (idempotent methods only); 0: none.
    pub http_retries: u32,
    /// The longest wait before a retry; a `Retry-After` asking for longer is
    /// not waited for (the plugin gets the response).
    pub http_retry_max_delay_secs: u64,
    /// A domain's circuit opens after this many consecutive failed requests
    /// to it (connection errors, timeouts, 5xx answers): its requests then
    /// fail at once until the cool-down is over; 0: never open.
    pub breaker_failures: u32,
    /// How long an open circuit refuses requests before it lets one probe
    /// through (a success closes it, a failure opens it again).
    pub breaker_cooldown_secs: u64,
    /// Unicode normalization before row hashing.
    pub unicode_form: UnicodeForm,
    /// Rows absent from a full snapshot are archived instead of deleted (overrides tables declared `delete`).
    pub archive_missing: bool,
    /// `dc-host serve` disables an app after this many failed runs in a row
    /// (time-limit kills and crashes count) and alerts; 0: never.
    pub max_consecutive_failures: u32,
    /// `dc-host serve` deletes ended runs, their change feeds, log records and
    /// function-call records older than this many days, hourly; 0: keep all.
    pub retention_days: u32,
    /// The most work items one run collects (its `prepare_list` items and
    /// what `collect` enqueues); enqueued items beyond it are dropped and
    /// counted. Also caps a manifest's `max_items`.
    pub max_items: u64,
    /// `dc-host serve` runs at most this many runs at once on this host
    /// (default: 4 per CPU core). Due runs and START commands beyond it wait,
    /// unclaimed, until a run ends (or another host with room claims them).
    pub max_runs_per_host: Option<u32>,
    /// Persist every run's work items as it goes (`dc_run_items`: added,
    /// done with their records, failed), so a run that stopped, failed or was
    /// killed can be resumed with `dc-host run APP --resume RUNTIME_ID`.
    /// Off: runs write no items and cannot be resumed.
    pub persist_frontier: bool,
}

/// Politeness towards the sites plugins fetch from: one limiter per machine,
/// shared by every run and plugin (served by the supervising `dc-host run` or
/// `dc-host serve` to its workers over a Unix socket).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Requests per second to one domain without a `[[limits.domain]]` entry;
    /// 0: no rate limit. Loopback hosts (localhost, 127.0.0.0/8, ::1) have
    /// no default limits: name them in `[[limits.domain]]` to limit them.
    pub default_rps: f64,
    /// Requests in flight to one domain at once, without an entry of its own.
    pub default_concurrency: u32,
    /// Tighten a domain on 429/503 (halve its rate, block for `Retry-After`)
    /// and relax it again on success, capped by latency; false: fixed rates
    /// (a `Retry-After` still blocks the domain).
    pub adaptive: bool,
    /// AutoThrottle's target: a domain's rate is capped at this many requests
    /// in flight on average at its measured latency (rate ≤ this / latency); 0: off.
    pub target_concurrency: f64,
    /// The longest a `Retry-After` blocks a domain, in seconds.
    pub max_block_secs: u64,
    /// Obey robots.txt (product token `dc-host`).
    pub obey_robots: bool,
    /// Apps (`group/parent/name`) that do not obey robots.txt.
    pub robots_ignore_apps: Vec<String>,
    /// How long a fetched robots.txt is kept, in seconds.
    pub robots_ttl_secs: u64,
    /// Lease passes to workers: a worker keeps granting itself passes to an
    /// origin with no limits, a closed circuit and no robots.txt rule (up to
    /// 1 s, until any run reports a 429, 5xx or failure), instead of asking
    /// the permit server before every request; false: every request asks.
    pub leases: bool,
    /// The permit server's Unix socket (default `<data_dir>/run/limiter.sock`);
    /// every process that should share one limiter must name the same path.
    pub socket: Option<PathBuf>,
    /// Per-domain limits (`[[limits.domain]]` in the TOML file).
    pub domain: Vec<DomainLimit>,
}

/// The limits of one domain.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainLimit {
    /// The host name (no scheme, no port), e.g. `example.com`.
    pub host: String,
    /// Requests per second; 0: no rate limit; none: `default_rps`.
    pub rps: Option<f64>,
    /// Requests in flight at once; none: `default_concurrency`.
    pub concurrency: Option<u32>,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            default_rps: 4.0,
            default_concurrency: 4,
            adaptive: true,
            target_concurrency: 4.0,
            max_block_secs: 300,
            obey_robots: true,
            robots_ignore_apps: Vec::new(),
            robots_ttl_secs: 3600,
            leases: true,
            socket: None,
            domain: Vec::new(),
        }
    }
}

impl LimitSettings {
    /// Does `app` (`group/parent/name`) obey robots.txt?
    pub fn obeys_robots(&self, app: &str) -> bool {
        self.obey_robots && !self.robots_ignore_apps.iter().any(|a| a == app)
    }

    fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |key: String, value: String, allowed: &str| {
            Err(SettingsError::Invalid { key, value, allowed: allowed.into() })
        };
        let rate = |key: String, r: f64| {
            if r.is_finite() && r >= 0.0 {
                Ok(())
            } else {
                invalid(key, r.to_string(), "requests per second, at least 0 (0: no rate limit), e.g. 2.5")
            }
        };
        rate("limits.default_rps".into(), self.default_rps)?;
        if self.default_concurrency == 0 {
            return invalid("limits.default_concurrency".into(), "0".into(), "at least 1");
        }
        if !(self.target_concurrency.is_finite() && self.target_concurrency >= 0.0) {
            return invalid(
                "limits.target_concurrency".into(),
                self.target_concurrency.to_string(),
                "at least 0 (0: no latency cap), e.g. 4",
            );
        }
        if self.robots_ttl_secs == 0 {
            return invalid("limits.robots_ttl_secs".into(), "0".into(), "at least 1 second");
        }
        for (i, app) in self.robots_ignore_apps.iter().enumerate() {
            if app.split('/').count() != 3 || app.split('/').any(str::is_empty) {
                return invalid(
                    format!("limits.robots_ignore_apps[{i}]"),
                    format!("{app:?}"),
                    "an app path group/parent/name, as `dc-host apps list` shows it",
                );
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, d) in self.domain.iter().enumerate() {
            let host = d.host.trim();
            if host.is_empty() || (host.contains(['/', ':', ' ']) && !host.starts_with('[')) {
                return invalid(
                    format!("limits.domain[{i}].host"),
                    format!("{:?}", d.host),
                    "a host name without scheme, port or path, e.g. \"example.com\"",
                );
            }
            if !seen.insert(host.to_ascii_lowercase()) {
                return invalid(
                    format!("limits.domain[{i}].host"),
                    format!("{:?}", d.host),
                    "each host once; merge the two [[limits.domain]] entries",
                );
            }
            if let Some(r) = d.rps {
                rate(format!("limits.domain[{i}].rps"), r)?;
            }
            if d.concurrency == Some(0) {
                return invalid(format!("limits.domain[{i}].concurrency"), "0".into(), "at least 1");
            }
        }
        Ok(())
    }
}

/// Where alerts go: channels, each with a minimum severity.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifySettings {
    /// The channels (`[[notify.channels]]` in the TOML file).
    pub channels: Vec<ChannelSettings>,
    /// Also send a notice when a run succeeds, with its counts (opt-in).
    pub run_finished: bool,
}

/// The token authority: who issues access tokens for whom, how long tokens
/// live, how long a replaced signing key keeps verifying, and how fast one
/// client address may ask for tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// The `iss` claim written into and required of access tokens.
    pub issuer: String,
    /// The `aud` claim written into and required of access tokens.
    pub audience: String,
    /// Lifetime of an access token (a JWT), in seconds.
    pub access_ttl_secs: u64,
    /// Lifetime of a refresh token, in seconds (each use issues a new one).
    pub refresh_ttl_secs: u64,
    /// After `dc-host auth rotate-key`, the replaced key keeps verifying
    /// tokens for this many seconds (at least `access_ttl_secs`).
    pub key_grace_secs: u64,
    /// Requests to the token and revocation endpoints one client address may
    /// make per minute (sustained).
    pub token_rate_per_minute: u32,
    /// Requests one client address may make at once before the per-minute
    /// rate applies.
    pub token_rate_burst: u32,
    /// How long `dc-host serve` keeps what it read of a token's subject (its
    /// role, whether it is disabled or removed), in seconds: a change made by
    /// another process (`dc-host users …`, `clients …`) applies to bearer
    /// tokens within this time. 0: read on every request. At most 300.
    pub subject_cache_secs: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            issuer: "dc-host".into(),
            audience: "dc-host-api".into(),
            access_ttl_secs: 900,
            refresh_ttl_secs: 14 * 24 * 3600,
            key_grace_secs: 3600,
            token_rate_per_minute: 30,
            token_rate_burst: 10,
            subject_cache_secs: 5,
        }
    }
}

/// One notification channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelSettings {
    /// `webhook` (JSON, signed with HMAC-SHA256 when a secret is set),
    /// `slack`, `telegram`, `teams` or `email`; see [`ChannelKind`].
    pub kind: ChannelKind,
    /// Where to POST (may hold `${secret:NAME}`); for `email`, the mail relay:
    /// `smtp://HOST[:PORT]` (STARTTLS, port 587 by default) or
    /// `smtps://HOST[:PORT]` (TLS from the first byte, port 465 by default).
    pub url: String,
    /// HMAC key for `webhook` (may be `${secret:NAME}`).
    #[serde(default)]
    pub secret: Option<String>,
    /// The least severe notice sent to this channel (default `warning`).
    #[serde(default = "default_min_severity")]
    pub min_severity: crate::enums::AlertSeverity,
    /// `telegram` only: the chat to post to.
    #[serde(default)]
    pub chat_id: Option<String>,
    /// `email` only: how the connection to the relay is secured; `starttls`
    /// (the default for `smtp://`), `tls` (the default, and the only choice,
    /// for `smtps://`) or `none` (loopback relays only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<SmtpTls>,
    /// `email` only: the sender, `alerts@example.org` or `dc-host <alerts@example.org>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// `email` only: the recipients (at least one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub to: Vec<String>,
    /// `email` only: the user name to log in to the relay with (may be `${secret:NAME}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// `email` only: its password; reference a secret: `${secret:smtp_password}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// `email` only: a PEM file of certificates to trust besides the system's
    /// (a relay with a private or self-signed certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// How an `email` channel secures its connection to the mail relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS before anything is sent; a relay
    /// that does not offer STARTTLS is refused.
    Starttls,
    /// TLS from the first byte (SMTPS).
    Tls,
    /// No encryption: only for a relay on a loopback address.
    None,
}

/// The mail relay of an `email` channel, parsed from its `url` and `tls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpRelay {
    /// Host name or IP address (an IPv6 address without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// How the connection is secured.
    pub tls: SmtpTls,
}

/// Why an `email` channel's `url` and `tls` name no usable relay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SmtpRelayError {
    /// The field at fault: `url` or `tls`.
    pub field: &'static str,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl ChannelSettings {
    /// The mail relay of an `email` channel; the error names the field and
    /// says what is allowed.
    pub fn smtp_relay(&self) -> Result<SmtpRelay, SmtpRelayError> {
        let err = |field, message: &str| SmtpRelayError { field, message: message.to_string() };
        let url = reqwest::Url::parse(&self.url).map_err(|e| {
            err("url", &format!("not a URL ({e}); use smtp://HOST:PORT (STARTTLS) or smtps://HOST:PORT (TLS)"))
        })?;
        let (default_port, implied) = match url.scheme() {
            "smtp" => (587, SmtpTls::Starttls),
            "smtps" => (465, SmtpTls::Tls),
            _ => return Err(err("url", "use smtp://HOST:PORT (STARTTLS) or smtps://HOST:PORT (TLS)")),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(err("url", "put the user name in username and the password in password, not in the URL"));
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err(err("url", "a mail relay URL has no path or query: smtp://HOST:PORT"));
        }
        let host = match url.host_str() {
            Some(h) if !h.is_empty() => h.trim_start_matches('[').trim_end_matches(']').to_string(),
            _ => return Err(err("url", "name the relay's host: smtp://HOST:PORT")),
        };
        let loopback =
            host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        let tls = match (self.tls, implied) {
            (None, t) => t,
            (Some(SmtpTls::Starttls | SmtpTls::None), SmtpTls::Tls) => {
                return Err(err("tls", "smtps:// is TLS from the first byte; use smtp:// for starttls or none"));
            }
            (Some(t), _) => t,
        };
        if tls == SmtpTls::None && !loopback {
            return Err(err(
                "tls",
                &format!(
                    "tls = \"none\" sends the password and the notices in clear text, so it is refused for {host}, \
                     which is not a loopback address; use starttls or tls"
                ),
            ));
        }
        Ok(SmtpRelay { host, port: url.port().unwrap_or(default_port), tls })
    }
}

/// The kinds of channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// A generic JSON webhook, optionally signed.
    Webhook,
    /// A Slack incoming webhook.
    Slack,
    /// The Telegram Bot API: `url` is `https://api.telegram.org/bot<token>`
    /// (keep it in the secrets store), messages go to `sendMessage` for `chat_id`.
    Telegram,
    /// A Microsoft Teams webhook (a Workflows "when a Teams webhook request is
    /// received" URL): an Adaptive Card message.
    Teams,
    /// E-mail through an SMTP relay (`url`, `tls`, `from`, `to`, `username`,
    /// `password`, `ca_file`).
    Email,
}

/// The REST API under `/api/v1`. Off by default: it is served only when
/// `enabled = true` and a token authority is configured, so no host opens a
/// control port nobody asked for.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSettings {
    /// Serve the API.
    pub enabled: bool,
    /// Address and port to listen on: an IP address, not a host name
    /// (`127.0.0.1:8080`; `0.0.0.0:8080` for every interface).
    #[serde(deserialize_with = "socket_addr")]
    pub listen: SocketAddr,
    /// Browser origins allowed to call the API from their pages (CORS), each
    /// `scheme://host[:port]`; none by default (no cross-origin calls).
    pub cors_origins: Vec<String>,
    /// The largest request body accepted, in KiB (larger: 413).
    pub max_body_kb: u64,
    /// Requests per second each client (token subject) may make once its
    /// burst is spent (more: 429 with `Retry-After`).
    pub requests_per_second_per_client: u32,
    /// Requests each client may make at once.
    pub burst_per_client: u32,
    /// The largest plugin upload (`POST /api/v1/plugins`) accepted, in MiB
    /// (none: `general.max_plugin_file_mb`).
    pub max_upload_mb: Option<u64>,
    /// How long an answer of `GET /api/v1/apps` is reused for the same query,
    /// in milliseconds (0: every request reads the database; at most 60000).
    /// A change made through the API drops the kept answers at once; a change
    /// made elsewhere (runs, the CLI, another host) shows within this time.
    pub apps_cache_ms: u64,
    /// `dc-host serve` deletes audit-log entries older than this many days,
    /// hourly (with `runs.retention_days`' job); 0: keep them all.
    pub audit_retention_days: u32,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            enabled: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            cors_origins: Vec::new(),
            max_body_kb: 256,
            requests_per_second_per_client: 20,
            burst_per_client: 100,
            max_upload_mb: None,
            apps_cache_ms: 1000,
            audit_retention_days: 365,
        }
    }
}

fn socket_addr<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "{text:?} is not an IP address and port; use one like \"127.0.0.1:8080\" (a host name is not accepted)"
        ))
    })
}

/// True when `origin` is a browser origin: `http(s)://host[:port]`, nothing after.
fn is_origin(origin: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else { return false };
    matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', '@', ' ', '*'])
        && rest.split(':').nth(1).is_none_or(|port| port.parse::<u16>().is_ok())
}

/// RabbitMQ for operator commands: `dc-host apps start|stop|…` also publish
/// the command, and `dc-host serve` consumes it and acts at once. The
/// database path stays in force with or without a broker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BrokerSettings {
    /// `amqp://USER:PASSWORD@HOST:PORT/VHOST` (may hold `${secret:NAME}`);
    /// none: no broker.
    pub url: Option<String>,
    /// The durable direct exchange commands are published to (its dead-letter
    /// exchange is `<exchange>.dead`).
    pub exchange: String,
    /// The durable queue every `serve` consumes from (competing consumers; its
    /// dead-letter queue is `<queue>.dead`).
    pub queue: String,
}

impl Default for BrokerSettings {
    fn default() -> Self {
        BrokerSettings { url: None, exchange: "dc.commands".into(), queue: "dc.commands".into() }
    }
}

/// The CAPTCHA solving services a host can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaptchaProvider {
    /// anti-captcha.com (and services speaking its JSON API).
    AntiCaptcha,
}

/// CAPTCHA solving for plugins (`captcha.solve`): with a provider set, the host
/// offers the `captcha` capability; the provider's client key is read from the
/// secrets store when a run first solves one.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptchaSettings {
    /// `anticaptcha`; none: no captcha solving.
    pub provider: Option<CaptchaProvider>,
    /// The name of the secret holding the provider's client key
    /// (`dc-host secrets set NAME`).
    pub key_secret: Option<String>,
    /// The provider's API address.
    pub base_url: String,
    /// The most a run may spend on captchas, in USD (none: no limit). Once a
    /// run's solves cost this much, further solves are refused.
    pub max_cost_per_run: Option<f64>,
    /// Milliseconds to wait after creating a task before asking for its result
    /// (anti-captcha's recommendation: 5000).
    pub first_poll_ms: u64,
    /// Milliseconds between two requests for a task's result at first; the
    /// wait grows by a quarter each time, up to 2.5 times this.
    pub poll_interval_ms: u64,
}

impl Default for CaptchaSettings {
    fn default() -> Self {
        CaptchaSettings {
            provider: None,
            key_secret: None,
            base_url: "https://api.anti-captcha.com".into(),
            max_cost_per_run: None,
            first_poll_ms: 5000,
            poll_interval_ms: 2000,
        }
    }
}

fn default_min_severity() -> crate::enums::AlertSeverity {
    crate::enums::AlertSeverity::Warning
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            config_version: CONFIG_VERSION,
            general: GeneralSettings::default(),
            database: DatabaseSettings::default(),
            logging: LogSettings::default(),
            runs: RunSettings::default(),
            limits: LimitSettings::default(),
            notify: NotifySettings::default(),
            auth: AuthSettings::default(),
            api: ApiSettings::default(),
            broker: BrokerSettings::default(),
            proxy: ProxySettings::default(),
            captcha: CaptchaSettings::default(),
            warnings: Vec::new(),
        }
    }
}

impl Default for GeneralSettings {
    fn default() -> Self {
        GeneralSettings { data_dir: PathBuf::from("var"), plugins_dir: None, host_name: None, max_plugin_file_mb: 256 }
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings { url: None, max_connections: 8, connect_timeout_secs: 10, busy_timeout_secs: 30 }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            level: "info".into(),
            database: true,
            buffer: 10_000,
            fallback_file: None,
            splunk_url: None,
            splunk_token: None,
        }
    }
}

impl Default for RunSettings {
    fn default() -> Self {
        RunSettings {
            threads: 4,
            time_limit_secs: 3600,
            stop_grace_secs: 10,
            memory_limit_mb: None,
            cpu_limit_secs: None,
            http_timeout_secs: 30,
            http_retries: 2,
            http_retry_max_delay_secs: 60,
            breaker_failures: 10,
            breaker_cooldown_secs: 30,
            unicode_form: UnicodeForm::Nfc,
            archive_missing: false,
            max_consecutive_failures: 3,
            retention_days: 0,
            // the same default as dc_frontier::DEFAULT_MAX_ITEMS
            max_items: 1_000_000,
            max_runs_per_host: None,
            persist_frontier: true,
        }
    }
}

fn parse_env_value(raw: &str) -> toml::Value {
    // numbers and booleans keep their type; everything else is a string
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t.remove("v").unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

impl RunSettings {
    /// How many runs `serve` runs at once on this host: `max_runs_per_host`,
    /// or 4 per CPU core.
    pub fn runs_per_host(&self) -> usize {
        match self.max_runs_per_host {
            Some(n) => n as usize,
            None => 4 * std::thread::available_parallelism().map_or(1, usize::from),
        }
    }
}

impl Settings {
    /// Loads settings: `file` (if any), then `DC_*` variables from `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, SettingsError> {
        let (mut table, origin) = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| SettingsError::Read { path: path.to_path_buf(), source })?;
                let t: toml::Table = toml::from_str(&text)
                    .map_err(|e| SettingsError::Parse { origin: path.display().to_string(), message: e.to_string() })?;
                (t, path.display().to_string())
            }
            None => (toml::Table::new(), "defaults".to_string()),
        };
        let mut from_env = Vec::new();
        let mut warnings = Vec::new();
        let mut set_by: std::collections::BTreeMap<(String, String), String> = Default::default();
        let mut env: Vec<(String, String)> = env.into_iter().filter(|(k, _)| k.starts_with("DC_")).collect();
        env.sort();
        for (key, raw) in env {
            if NON_SETTING_VARS.contains(&key.as_str()) {
                continue;
            }
            let rest = key["DC_".len()..].to_ascii_lowercase();
            let (section, field) = match rest.as_str() {
                "data_dir" => ("general".to_string(), "data_dir".to_string()),
                "plugins_dir" => ("general".to_string(), "plugins_dir".to_string()),
                _ => match rest.split_once('_') {
                    Some((s, f)) if SECTIONS.contains(&s) => (s.to_string(), f.to_string()),
                    _ => {
                        // another program's variable that happens to start with DC_
                        warnings.push(format!(
                            "{key} is not a dc-host setting and is ignored (settings are DC_<SECTION>_<KEY> with a section of {}, e.g. DC_DATABASE_URL)",
                            SECTIONS.join(", ")
                        ));
                        continue;
                    }
                },
            };
            if let Some(other) = set_by.insert((section.clone(), field.clone()), key.clone()) {
                return Err(SettingsError::Parse {
                    origin: format!("{other} and {key}"),
                    message: format!("both set {section}.{field}; keep one of them"),
                });
            }
            let value = if matches!(
                field.as_str(),
                "url"
                    | "data_dir"
                    | "plugins_dir"
                    | "host_name"
                    | "splunk_url"
                    | "splunk_token"
                    | "level"
                    | "issuer"
                    | "audience"
                    | "listen"
                    | "exchange"
                    | "queue"
                    | "provider"
                    | "rotate"
                    | "file"
                    | "username"
                    | "password"
                    | "brightdata_host"
                    | "brightdata_customer"
                    | "brightdata_zone"
                    | "brightdata_country"
                    | "socket"
                    | "key_secret"
                    | "base_url"
            ) {
                toml::Value::String(raw)
            } else if matches!(field.as_str(), "cors_origins" | "urls" | "judges" | "apps" | "robots_ignore_apps") {
                // a list in one variable: comma-separated
                toml::Value::Array(
                    raw.split(',')
                        .map(str::trim)
                        .filter(|o| !o.is_empty())
                        .map(|o| toml::Value::String(o.into()))
                        .collect(),
                )
            } else {
                parse_env_value(&raw)
            };
            let entry = table.entry(section.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(t) => {
                    t.insert(field, value);
                }
                _ => {
                    return Err(SettingsError::Parse {
                        origin: key.clone(),
                        message: format!("{key} names {section:?}, which is not a settings section"),
                    });
                }
            }
            from_env.push(key);
        }
        let origin = if from_env.is_empty() { origin } else { format!("{origin} + {}", from_env.join(", ")) };
        let mut settings: Settings = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(
            |e: serde_path_to_error::Error<toml::de::Error>| {
                let path = e.path().to_string();
                let message = e.into_inner().message().to_string();
                let message = if path == "." { message } else { format!("{path}: {message}") };
                SettingsError::Parse { origin: origin.clone(), message }
            },
        )?;
        settings.validate()?;
        for (i, c) in settings.notify.channels.iter().enumerate() {
            if c.password.as_deref().is_some_and(|p| !p.contains("${secret:")) {
                warnings.push(format!(
                    "notify.channels[{i}].password holds the password itself; keep it in the secrets store \
                     (`dc-host secrets set smtp_password`) and write password = \"${{secret:smtp_password}}\""
                ));
            }
        }
        settings.warnings = warnings;
        Ok(settings)
    }

    /// Loads from the process environment (`DC_CONFIG` picks the file if `file` is None).
    pub fn from_env(file: Option<&Path>) -> Result<Settings, SettingsError> {
        let env_file = std::env::var_os("DC_CONFIG").map(PathBuf::from);
        Settings::load(file.or(env_file.as_deref()), std::env::vars())
    }

    fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |key: &str, value: String, allowed: &str| {
            Err(SettingsError::Invalid { key: key.into(), value, allowed: allowed.into() })
        };
        if self.config_version != CONFIG_VERSION {
            return invalid("config_version", self.config_version.to_string(), "this build reads config_version = 1");
        }
        if let Some(url) = &self.database.url
            && !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return invalid("database.url", redact_url(url), "use sqlite://PATH or postgres://USER@HOST:PORT/DB");
        }
        if self.general.data_dir.as_os_str().is_empty() {
            return invalid("general.data_dir", "\"\"".into(), "a directory path, e.g. \"var\" (it must not be empty)");
        }
        if self.general.max_plugin_file_mb == 0 {
            return invalid("general.max_plugin_file_mb", "0".into(), "at least 1");
        }
        if self.database.max_connections == 0 {
            return invalid("database.max_connections", "0".into(), "at least 1");
        }
        if !matches!(self.logging.level.as_str(), "trace" | "debug" | "info" | "warn" | "error") {
            return invalid("logging.level", self.logging.level.clone(), "one of trace, debug, info, warn, error");
        }
        if self.logging.buffer == 0 {
            return invalid("logging.buffer", "0".into(), "at least 1");
        }
        if self.runs.threads == 0 || self.runs.threads > 256 {
            return invalid("runs.threads", self.runs.threads.to_string(), "1 to 256");
        }
        if self.runs.max_items == 0 {
            return invalid("runs.max_items", "0".into(), "at least 1");
        }
        if self.runs.max_runs_per_host == Some(0) {
            return invalid("runs.max_runs_per_host", "0".into(), "at least 1 (leave it out for 4 per CPU core)");
        }
        if self.runs.time_limit_secs == 0 {
            return invalid("runs.time_limit_secs", "0".into(), "at least 1 second");
        }
        self.limits.validate()?;
        for (i, c) in self.notify.channels.iter().enumerate() {
            if c.kind == ChannelKind::Email {
                validate_email_channel(i, c)?;
                continue;
            }
            let email_only = [
                ("tls", c.tls.map(|t| format!("{t:?}").to_lowercase())),
                ("from", c.from.clone()),
                ("to", (!c.to.is_empty()).then(|| c.to.join(", "))),
                ("username", c.username.as_ref().map(|_| "<redacted>".to_string())),
                ("password", c.password.as_ref().map(|_| "<redacted>".to_string())),
                ("ca_file", c.ca_file.as_ref().map(|p| p.display().to_string())),
            ];
            if let Some((field, Some(value))) = email_only.into_iter().find(|(_, v)| v.is_some()) {
                let kind = format!("{:?}", c.kind).to_lowercase();
                return invalid(
                    &format!("notify.channels[{i}].{field}"),
                    value,
                    &format!("only kind = \"email\" channels have {field}; remove it from this {kind} channel"),
                );
            }
            if c.kind == ChannelKind::Telegram && c.chat_id.as_deref().is_none_or(str::is_empty) {
                return invalid(
                    &format!("notify.channels[{i}].chat_id"),
                    "none".into(),
                    "the Telegram chat to post to",
                );
            }
            let resolvable = c.url.contains("${secret:");
            if !(resolvable || c.url.starts_with("http://") || c.url.starts_with("https://")) {
                return invalid(&format!("notify.channels[{i}].url"), redact_url(&c.url), "an http:// or https:// URL");
            }
        }
        self.proxy.validate()?;
        if self.runs.breaker_failures > 0 && self.runs.breaker_cooldown_secs == 0 {
            return invalid(
                "runs.breaker_cooldown_secs",
                "0".into(),
                "at least 1 second (to turn the circuit breaker off, set runs.breaker_failures = 0)",
            );
        }
        if self.runs.http_timeout_secs == 0 {
            return invalid("runs.http_timeout_secs", "0".into(), "at least 1 second");
        }
        if self.database.connect_timeout_secs == 0 {
            return invalid("database.connect_timeout_secs", "0".into(), "at least 1 second");
        }
        if let Some(mb) = self.runs.memory_limit_mb
            && mb < MIN_WORKER_MEMORY_MB
        {
            return invalid(
                "runs.memory_limit_mb",
                mb.to_string(),
                &format!(
                    "at least {MIN_WORKER_MEMORY_MB}: the limit is on address space, and a worker needs about that much to start (threads, runtime, database pool); leave it unset for no limit"
                ),
            );
        }
        if self.runs.cpu_limit_secs == Some(0) {
            return invalid("runs.cpu_limit_secs", "0".into(), "at least 1 second, or unset for no limit");
        }
        let auth = &self.auth;
        if auth.issuer.trim().is_empty() {
            return invalid("auth.issuer", format!("{:?}", auth.issuer), "a non-empty name, e.g. \"dc-host\"");
        }
        if auth.audience.trim().is_empty() {
            return invalid("auth.audience", format!("{:?}", auth.audience), "a non-empty name, e.g. \"dc-host-api\"");
        }
        if !(10..=86_400).contains(&auth.access_ttl_secs) {
            return invalid(
                "auth.access_ttl_secs",
                auth.access_ttl_secs.to_string(),
                "10 to 86400 seconds (access tokens cannot be revoked, so keep them short-lived)",
            );
        }
        if auth.refresh_ttl_secs < auth.access_ttl_secs {
            return invalid(
                "auth.refresh_ttl_secs",
                auth.refresh_ttl_secs.to_string(),
                &format!("at least auth.access_ttl_secs ({})", auth.access_ttl_secs),
            );
        }
        if auth.key_grace_secs < auth.access_ttl_secs {
            return invalid(
                "auth.key_grace_secs",
                auth.key_grace_secs.to_string(),
                &format!(
                    "at least auth.access_ttl_secs ({}), so tokens signed just before a key rotation stay valid until they expire",
                    auth.access_ttl_secs
                ),
            );
        }
        if auth.token_rate_per_minute == 0 {
            return invalid("auth.token_rate_per_minute", "0".into(), "at least 1");
        }
        if auth.token_rate_burst == 0 {
            return invalid("auth.token_rate_burst", "0".into(), "at least 1");
        }
        if auth.subject_cache_secs > 300 {
            return invalid(
                "auth.subject_cache_secs",
                auth.subject_cache_secs.to_string(),
                "at most 300 (0: no cache)",
            );
        }
        if self.logging.splunk_url.is_some() != self.logging.splunk_token.is_some() {
            return invalid(
                "logging.splunk_url",
                self.logging.splunk_url.clone().unwrap_or_default(),
                "set both logging.splunk_url and logging.splunk_token, or neither",
            );
        }
        for (i, origin) in self.api.cors_origins.iter().enumerate() {
            if !is_origin(origin) {
                return invalid(
                    &format!("api.cors_origins[{i}]"),
                    format!("{origin:?}"),
                    "a browser origin: scheme://host[:port] with nothing after it, e.g. \"https://ops.example.com\" (no path, no trailing slash, no wildcard)",
                );
            }
        }
        if self.api.apps_cache_ms > 60_000 {
            return invalid("api.apps_cache_ms", self.api.apps_cache_ms.to_string(), "at most 60000 (0: no cache)");
        }
        if self.api.max_body_kb == 0 {
            return invalid("api.max_body_kb", "0".into(), "at least 1");
        }
        if !(1..=1_000_000).contains(&self.api.requests_per_second_per_client) {
            return invalid(
                "api.requests_per_second_per_client",
                self.api.requests_per_second_per_client.to_string(),
                "1 to 1000000",
            );
        }
        if self.api.burst_per_client == 0 {
            return invalid("api.burst_per_client", "0".into(), "at least 1");
        }
        if self.api.max_upload_mb == Some(0) {
            return invalid(
                "api.max_upload_mb",
                "0".into(),
                "at least 1 (leave it out for general.max_plugin_file_mb)",
            );
        }
        if let Some(url) = &self.broker.url
            && !(url.contains("${secret:") || url.starts_with("amqp://"))
        {
            return invalid(
                "broker.url",
                redact_url(url),
                "amqp://USER:PASSWORD@HOST:PORT/VHOST (e.g. amqp://guest:guest@127.0.0.1:5672/%2f); amqps is not supported by this build",
            );
        }
        self.validate_captcha()?;
        for (key, name) in [("broker.exchange", &self.broker.exchange), ("broker.queue", &self.broker.queue)] {
            if name.is_empty() || name.len() > 200 || name.starts_with("amq.") {
                return invalid(
                    key,
                    format!("{name:?}"),
                    "a name of 1 to 200 bytes that does not start with \"amq.\" (reserved by RabbitMQ)",
                );
            }
        }
        Ok(())
    }

    fn validate_captcha(&self) -> Result<(), SettingsError> {
        let invalid = |key: &str, value: String, allowed: &str| {
            Err(SettingsError::Invalid { key: format!("captcha.{key}"), value, allowed: allowed.into() })
        };
        let c = &self.captcha;
        match (&c.provider, &c.key_secret) {
            (Some(_), None) => {
                return invalid(
                    "key_secret",
                    "none".into(),
                    "the name of the secret holding the provider's client key, e.g. key_secret = \"anticaptcha_key\" (store it with `dc-host secrets set anticaptcha_key`)",
                );
            }
            (None, Some(name)) => {
                return invalid(
                    "key_secret",
                    format!("{name:?}"),
                    "set captcha.provider = \"anticaptcha\" too, or remove key_secret",
                );
            }
            (Some(_), Some(name)) if crate::secrets::validate_name(name).is_err() => {
                return invalid("key_secret", format!("{name:?}"), "a secret name: letters, digits, '_', '.', '-'");
            }
            _ => {}
        }
        if !(c.base_url.starts_with("http://") || c.base_url.starts_with("https://")) {
            return invalid(
                "base_url",
                redact_url(&c.base_url),
                "an http:// or https:// URL, e.g. https://api.anti-captcha.com",
            );
        }
        if let Some(max) = c.max_cost_per_run
            && !(max.is_finite() && max > 0.0)
        {
            return invalid(
                "max_cost_per_run",
                max.to_string(),
                "an amount in USD above 0, e.g. 0.5; leave it unset for no limit",
            );
        }
        if c.poll_interval_ms == 0 {
            return invalid("poll_interval_ms", "0".into(), "at least 1 (anti-captcha recommends 2000)");
        }
        Ok(())
    }

    /// The largest plugin file accepted, in bytes.
    pub fn max_plugin_file_bytes(&self) -> u64 {
        self.general.max_plugin_file_mb.saturating_mul(1024 * 1024)
    }

    /// The largest plugin upload body, in bytes (`api.max_upload_mb`, else
    /// the plugin file limit), with room for the multipart framing.
    pub fn max_upload_bytes(&self) -> u64 {
        self.api
            .max_upload_mb
            .unwrap_or(self.general.max_plugin_file_mb)
            .saturating_mul(1024 * 1024)
            .saturating_add(64 * 1024)
    }

    /// Where operators drop plugin files.
    pub fn plugins_dir(&self) -> PathBuf {
        self.general.plugins_dir.clone().unwrap_or_else(|| self.general.data_dir.join("plugins"))
    }

    /// The content-addressed plugin store.
    pub fn store_dir(&self) -> PathBuf {
        self.general.data_dir.join("store")
    }

    /// The encrypted secrets store (`<data_dir>/secrets.json`).
    pub fn secrets_file(&self) -> PathBuf {
        self.general.data_dir.join("secrets.json")
    }

    /// The secrets key file (`<data_dir>/secrets.key`), used when
    /// `DC_SECRETS_KEY` is not set.
    pub fn secrets_key_file(&self) -> PathBuf {
        self.general.data_dir.join("secrets.key")
    }

    /// The database URL in effect (SQLite under data_dir by default).
    pub fn database_url(&self) -> String {
        self.database.url.clone().unwrap_or_else(|| self.default_database_url())
    }

    /// The embedded database under the data directory (used when no URL is set).
    pub fn default_database_url(&self) -> String {
        format!("sqlite://{}", self.general.data_dir.join("dc-host.db").display())
    }

    /// The fallback log file.
    pub fn fallback_log_file(&self) -> PathBuf {
        self.logging.fallback_file.clone().unwrap_or_else(|| self.general.data_dir.join("logs").join("fallback.jsonl"))
    }

    /// This host's name as recorded on runs.
    pub fn host_name(&self) -> String {
        self.general.host_name.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "localhost".into())
        })
    }

    /// The effective configuration as TOML with secrets redacted.
    pub fn to_redacted_toml(&self) -> String {
        let mut s = self.clone();
        s.database.url = Some(redact_url(&self.database_url()));
        s.general.plugins_dir = Some(self.plugins_dir());
        s.logging.fallback_file = Some(self.fallback_log_file());
        if s.logging.splunk_token.is_some() {
            s.logging.splunk_token = Some("<redacted>".into());
        }
        s.logging.splunk_url = self.logging.splunk_url.as_deref().map(redact_url);
        // an AMQP URL carries its password; a `${secret:…}` reference stays as written
        s.broker.url =
            self.broker.url.as_deref().map(|u| if u.contains("${secret:") { u.to_string() } else { redact_url(u) });
        for c in &mut s.notify.channels {
            // webhook URLs carry their token in the path (Slack, Teams, Telegram):
            // show where they go, never the token; `${secret:…}` references stay.
            // A mail relay's URL holds no credentials (they are refused there).
            if c.kind == ChannelKind::Email {
                c.url = redact_url(&c.url);
            } else if !c.url.contains("${secret:") {
                let shown = redact_url(&c.url);
                c.url = match shown.split_once("://") {
                    Some((scheme, rest)) => {
                        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
                        format!("{scheme}://{host}/<redacted>")
                    }
                    None => "<redacted>".into(),
                };
            }
            for v in [&mut c.secret, &mut c.password] {
                if v.as_deref().is_some_and(|v| !v.contains("${secret:")) {
                    *v = Some("<redacted>".into());
                }
            }
        }
        if s.proxy.password.as_deref().is_some_and(|v| !v.contains("${secret:")) {
            s.proxy.password = Some("<redacted>".into());
        }
        toml::to_string_pretty(&s).unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
    }
}

/// Checks an `email` channel: a usable relay, sender and recipients that parse
/// as addresses, credentials in pairs, a readable `ca_file`, and none of the
/// other kinds' fields.
fn validate_email_channel(i: usize, c: &ChannelSettings) -> Result<(), SettingsError> {
    let invalid = |field: &str, value: String, allowed: &str| {
        Err(SettingsError::Invalid { key: format!("notify.channels[{i}].{field}"), value, allowed: allowed.into() })
    };
    if let Some(v) = &c.chat_id {
        return invalid("chat_id", v.clone(), "only telegram channels have chat_id; remove it from this email channel");
    }
    if c.secret.is_some() {
        return invalid(
            "secret",
            "<redacted>".into(),
            "only webhook channels have secret (an HMAC key); an email channel logs in with username and password",
        );
    }
    if !c.url.contains("${secret:")
        && let Err(e) = c.smtp_relay()
    {
        let value = match e.field {
            "tls" => c.tls.map(|t| format!("{t:?}").to_lowercase()).unwrap_or_else(|| redact_url(&c.url)),
            _ => redact_url(&c.url),
        };
        return invalid(e.field, value, &e.message);
    }
    const ADDRESS: &str = "an e-mail address like alerts@example.org or \"dc-host <alerts@example.org>\"";
    match &c.from {
        None => return invalid("from", "none".into(), &format!("the sender: {ADDRESS}")),
        Some(from) if from.parse::<lettre::message::Mailbox>().is_err() => {
            return invalid("from", from.clone(), ADDRESS);
        }
        Some(_) => {}
    }
    if c.to.is_empty() {
        return invalid(
            "to",
            "[]".into(),
            &format!("at least one recipient: to = [\"ops@example.org\"], each {ADDRESS}"),
        );
    }
    for (j, to) in c.to.iter().enumerate() {
        if to.parse::<lettre::message::Mailbox>().is_err() {
            return invalid(&format!("to[{j}]"), to.clone(), ADDRESS);
        }
    }
    match (&c.username, &c.password) {
        (Some(_), None) => {
            return invalid(
                "password",
                "none".into(),
                "set a password with the username: password = \"${secret:NAME}\"",
            );
        }
        (None, Some(_)) => {
            return invalid("username", "none".into(), "set the user name the password belongs to");
        }
        _ => {}
    }
    if let Some(path) = &c.ca_file {
        let shown = path.display().to_string();
        match std::fs::read_to_string(path) {
            Err(e) => {
                return invalid("ca_file", shown, &format!("cannot read it ({e}); name a PEM file of certificates"));
            }
            Ok(text) if !text.contains("-----BEGIN CERTIFICATE-----") => {
                return invalid("ca_file", shown, "holds no PEM certificate (-----BEGIN CERTIFICATE-----)");
            }
            Ok(_) => {}
        }
    }
    Ok(())
}

/// Query parameters whose values are credentials.
const SECRET_PARAMS: &[&str] = &[
    "password",
    "sslpassword",
    "pass",
    "pwd",
    "passwd",
    "token",
    "access_token",
    "auth_token",
    "api_key",
    "apikey",
    "secret",
    "client_secret",
    "auth",
    "authorization",
    "signature",
    "sig",
];

/// Hides the credentials in a URL (database, Splunk, webhooks): the password
/// of the userinfo and the values of credential query parameters
/// ([`SECRET_PARAMS`]). A password may hold unencoded `@`, `/`, `?` or `#`, so
/// once a `user:` starts the URL, everything up to its LAST `@` is hidden: this
/// errs towards hiding too much, never too little.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else { return url.to_string() };
    let rest = &url[scheme_end..];
    let mut out = url[..scheme_end].to_string();
    // a user name holds none of these; the first ':' after one starts the password
    let user_colon = rest.find(':').filter(|&c| !rest[..c].contains(['/', '?', '#', '@']));
    let tail = match (user_colon, rest.rfind('@')) {
        (Some(c), Some(at)) if at > c => {
            out.push_str(&rest[..c]);
            out.push_str(":<redacted>");
            &rest[at..]
        }
        _ => rest,
    };
    match tail.find('?') {
        Some(q) => {
            out.push_str(&tail[..=q]);
            let (query, fragment) = match tail[q + 1..].split_once('#') {
                Some((qs, f)) => (qs, Some(f)),
                None => (&tail[q + 1..], None),
            };
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if SECRET_PARAMS.iter().any(|s| k.eq_ignore_ascii_case(s)) => {
                        format!("{k}=<redacted>")
                    }
                    _ => p.to_string(),
                })
                .collect();
            out.push_str(&params.join("&"));
            if let Some(f) = fragment {
                out.push('#');
                out.push_str(f);
            }
        }
        None => out.push_str(tail),
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn notify_channels_parse_and_their_tokens_never_show() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "[notify]\nrun_finished = true\n[[notify.channels]]\nkind = \"slack\"\nurl = \"https://hooks.slack.example/services/T0/B0/s3cr3tT0ken\"\n\
             [[notify.channels]]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\nsecret = \"hmac-k3y\"\nmin_severity = \"ERROR\"\n",
        )
        .expect("write");
        let s = Settings::load(Some(&file), std::iter::empty()).expect("loads");
        assert_eq!(s.notify.channels.len(), 2);
        assert!(s.notify.run_finished);
        assert_eq!(s.notify.channels[0].min_severity, crate::enums::AlertSeverity::Warning);
        let shown = s.to_redacted_toml();
        assert!(!shown.contains("s3cr3tT0ken") && !shown.contains("hmac-k3y"), "{shown}");
        assert!(shown.contains("https://hooks.slack.example/<redacted>"), "{shown}");
        std::fs::write(
            &file,
            "[[notify.channels]]\nkind = \"telegram\"\nurl = \"https://api.telegram.example/botX\"\n",
        )
        .expect("write");
        let e = Settings::load(Some(&file), std::iter::empty()).expect_err("no chat").to_string();
        assert!(e.contains("notify.channels[0].chat_id"), "{e}");
        std::fs::write(&file, "[[notify.channels]]\nkind = \"webhook\"\nurl = \"ftp://x\"\n").expect("write");
        let e = Settings::load(Some(&file), std::iter::empty()).expect_err("not http").to_string();
        assert!(e.contains("notify.channels[0].url"), "{e}");
    }

    use super::*;

    /// Loads a config file holding `toml`.
    fn load_toml(toml: &str) -> Result<Settings, SettingsError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("c.toml");
        std::fs::write(&file, toml).expect("write");
        Settings::load(Some(&file), std::iter::empty())
    }

    const EMAIL: &str =
        "[[notify.channels]]\nkind = \"email\"\nfrom = \"dc-host <alerts@example.org>\"\nto = [\"ops@example.org\"]\n";

    #[test]
    fn email_channels_parse_with_their_relay_and_hide_their_password() {
        let s = load_toml(&format!(
            "{EMAIL}url = \"smtp://mail.example.org\"\nusername = \"alerts\"\npassword = \"hunter2\"\n"
        ))
        .expect("loads");
        let c = &s.notify.channels[0];
        let relay = c.smtp_relay().expect("relay");
        assert_eq!(relay, SmtpRelay { host: "mail.example.org".into(), port: 587, tls: SmtpTls::Starttls });
        // a literal password works, with a warning saying how to keep it in the secrets store
        assert!(s.warnings.iter().any(|w| w.contains("notify.channels[0].password") && w.contains("secrets set")));
        let shown = s.to_redacted_toml();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("url = \"smtp://mail.example.org\"") && shown.contains("password = \"<redacted>\""));
        assert!(shown.contains("to = [\"ops@example.org\"]"), "{shown}");

        let s = load_toml(&format!(
            "{EMAIL}url = \"smtps://mail.example.org\"\npassword = \"${{secret:pw}}\"\nusername = \"u\"\n"
        ))
        .expect("loads");
        assert_eq!(s.notify.channels[0].smtp_relay().expect("relay").tls, SmtpTls::Tls);
        assert_eq!(s.notify.channels[0].smtp_relay().expect("relay").port, 465);
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        assert!(s.to_redacted_toml().contains("password = \"${secret:pw}\""));
        // plain text is for loopback relays only; IPv6 hosts lose their brackets
        let s = load_toml(&format!("{EMAIL}url = \"smtp://[::1]:2525\"\ntls = \"none\"\n")).expect("loads");
        assert_eq!(
            s.notify.channels[0].smtp_relay().expect("relay"),
            SmtpRelay { host: "::1".into(), port: 2525, tls: SmtpTls::None }
        );
        assert!(load_toml(&format!("{EMAIL}url = \"smtp://localhost:25\"\ntls = \"none\"\n")).is_ok());
        // other kinds' serialized settings carry no e-mail fields
        let s = load_toml("[[notify.channels]]\nkind = \"slack\"\nurl = \"https://hooks.slack.example/x\"\n")
            .expect("loads");
        let shown = s.to_redacted_toml();
        assert!(!shown.contains("to =") && !shown.contains("tls ="), "{shown}");
    }

    #[test]
    fn email_channels_refuse_what_cannot_work_naming_the_field() {
        let refused = |toml: String, key: &str, says: &str| {
            let e = load_toml(&toml).expect_err("refused").to_string();
            assert!(e.contains(key) && e.contains(says), "{toml}: {e}");
        };
        let relay = "url = \"smtp://mail.example.org\"\n";
        refused(
            format!("{EMAIL}url = \"smtp://mail.example.org\"\ntls = \"none\"\n"),
            "notify.channels[0].tls",
            "loopback",
        );
        refused(
            format!("{EMAIL}url = \"smtps://mail.example.org\"\ntls = \"starttls\"\n"),
            "notify.channels[0].tls",
            "smtps://",
        );
        refused(format!("{EMAIL}url = \"https://mail.example.org\"\n"), "notify.channels[0].url", "smtp://HOST:PORT");
        refused(format!("{EMAIL}url = \"smtp://u:pw@mail.example.org\"\n"), "notify.channels[0].url", "username");
        refused(
            format!("[[notify.channels]]\nkind = \"email\"\n{relay}to = [\"ops@example.org\"]\n"),
            "notify.channels[0].from",
            "the sender",
        );
        refused(
            format!("[[notify.channels]]\nkind = \"email\"\n{relay}from = \"a@example.org\"\n"),
            "notify.channels[0].to",
            "at least one recipient",
        );
        refused(
            format!(
                "[[notify.channels]]\nkind = \"email\"\n{relay}from = \"a@example.org\"\nto = [\"ok@example.org\", \"not an address\"]\n"
            ),
            "notify.channels[0].to[1]",
            "e-mail address",
        );
        refused(format!("{EMAIL}{relay}username = \"u\"\n"), "notify.channels[0].password", "password");
        refused(format!("{EMAIL}{relay}chat_id = \"1\"\n"), "notify.channels[0].chat_id", "only telegram");
        refused(
            format!("{EMAIL}{relay}ca_file = \"/nonexistent/ca.pem\"\n"),
            "notify.channels[0].ca_file",
            "cannot read",
        );
        // and the other kinds have no e-mail fields
        refused(
            "[[notify.channels]]\nkind = \"slack\"\nurl = \"https://hooks.slack.example/x\"\nto = [\"a@example.org\"]\n".into(),
            "notify.channels[0].to",
            "only kind = \"email\"",
        );
        let e = load_toml(
            "[[notify.channels]]\nkind = \"webhook\"\nurl = \"https://h.example/x\"\npassword = \"s3cret\"\n",
        )
        .expect_err("refused")
        .to_string();
        assert!(e.contains("notify.channels[0].password") && !e.contains("s3cret"), "{e}");
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_broker_is_off_by_default_and_its_url_never_shows_a_password() {
        let s = Settings::load(None, env(&[])).expect("defaults load");
        assert_eq!((s.broker.url.as_deref(), s.broker.exchange.as_str()), (None, "dc.commands"));
        let s = Settings::load(
            None,
            env(&[("DC_BROKER_URL", "amqp://guest:s3cr3t@127.0.0.1:5672/%2f"), ("DC_BROKER_QUEUE", "123")]),
        )
        .expect("loads");
        assert_eq!(s.broker.queue, "123", "a queue name stays a string");
        let shown = s.to_redacted_toml();
        assert!(!shown.contains("s3cr3t") && shown.contains("amqp://guest:<redacted>@127.0.0.1:5672/%2f"), "{shown}");
        let s =
            Settings::load(None, env(&[("DC_BROKER_URL", "amqp://guest:${secret:mq}@127.0.0.1/%2f")])).expect("loads");
        assert!(
            s.to_redacted_toml().contains("amqp://guest:${secret:mq}@127.0.0.1/%2f"),
            "a reference shows as written"
        );
        let e = Settings::load(None, env(&[("DC_BROKER_URL", "http://127.0.0.1")])).expect_err("not amqp").to_string();
        assert!(e.contains("broker.url") && e.contains("amqp://"), "{e}");
        let e = Settings::load(None, env(&[("DC_BROKER_EXCHANGE", "amq.direct")])).expect_err("reserved").to_string();
        assert!(e.contains("broker.exchange") && e.contains("reserved"), "{e}");
    }

    #[test]
    fn defaults_are_valid_and_embedded() {
        let s = Settings::load(None, env(&[])).expect("defaults load");
        assert_eq!(s.database_url(), "sqlite://var/dc-host.db");
        assert_eq!(s.plugins_dir(), PathBuf::from("var/plugins"));
        assert_eq!(s.runs.threads, 4);
    }

    #[test]
    fn environment_overrides_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[runs]\nthreads = 2\n[database]\nurl = \"sqlite://a.db\"\n").expect("write");
        let s = Settings::load(
            Some(&f),
            env(&[("DC_DATABASE_URL", "postgres://u:pw@127.0.0.1/db"), ("DC_RUNS_THREADS", "8"), ("PATH", "/bin")]),
        )
        .expect("loads");
        assert_eq!(s.runs.threads, 8);
        assert_eq!(s.database_url(), "postgres://u:pw@127.0.0.1/db");
        assert!(s.to_redacted_toml().contains("postgres://u:<redacted>@127.0.0.1/db"));
        assert!(!s.to_redacted_toml().contains("pw"));
    }

    #[test]
    fn redaction_holds_for_every_credential() {
        // (url, the secret that must not show, what must stay visible)
        let vectors: &[(&str, &str, &str)] = &[
            ("postgres://u:p#ss@h:5432/db", "p#ss", "postgres://u:<redacted>@h:5432/db"),
            ("postgres://u:pa/ss@h:5432/db", "pa/ss", "postgres://u:<redacted>@h:5432/db"),
            ("postgres://u:pa?ss@h/db", "pa?ss", "postgres://u:<redacted>@h/db"),
            ("postgres://u:p@ss@h/db", "p@ss", "postgres://u:<redacted>@h/db"),
            ("postgres://u:a:b@h/db", "a:b", "postgres://u:<redacted>@h/db"),
            ("postgres://:onlypw@h/db", "onlypw", "postgres://:<redacted>@h/db"),
            ("postgres://h/db?sslmode=require&sslpassword=keypw", "keypw", "sslpassword=<redacted>"),
            ("postgres://h/db?user=u&password=pw9&x=1", "pw9", "user=u&password=<redacted>&x=1"),
            ("postgres://h/db?PASSWORD=pw8", "pw8", "PASSWORD=<redacted>"),
            (
                "https://admin:hunter2@splunk:8088/services/collector",
                "hunter2",
                "https://admin:<redacted>@splunk:8088/",
            ),
            ("https://hooks.example/x?token=tok7#frag", "tok7", "token=<redacted>#frag"),
        ];
        for (url, secret, visible) in vectors {
            let shown = redact_url(url);
            assert!(!shown.contains(secret), "{url} shows {secret}: {shown}");
            assert!(shown.contains(visible), "{url}: {shown} lacks {visible}");
        }
    }

    #[test]
    fn passwords_are_redacted_everywhere_in_urls() {
        assert_eq!(redact_url("postgres://u:p@ss@h:5432/db"), "postgres://u:<redacted>@h:5432/db");
        assert_eq!(
            redact_url("postgres://h/db?user=u&password=pw&x=1"),
            "postgres://h/db?user=u&password=<redacted>&x=1"
        );
        assert_eq!(redact_url("sqlite://var/a@b.db"), "sqlite://var/a@b.db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn unknown_keys_are_refused_with_their_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[runs]\nthreds = 2\n").expect("write");
        let err = Settings::load(Some(&f), env(&[])).expect_err("typo refused").to_string();
        assert!(err.contains("threds"), "{err}");
        let err = Settings::load(None, env(&[("DC_RUNS_THREDS", "2")])).expect_err("typo refused").to_string();
        assert!(err.contains("threds") && err.contains("DC_RUNS_THREDS"), "{err}");
        // a variable outside dc-host's sections belongs to someone else: a warning
        let s = Settings::load(None, env(&[("DC_NONSENSE", "2"), ("DC_DEPLOY_ENV", "prod")])).expect("loads");
        assert_eq!(s.warnings.len(), 2, "{:?}", s.warnings);
        assert!(s.warnings[0].contains("DC_DEPLOY_ENV is not a dc-host setting and is ignored"), "{:?}", s.warnings);
        assert!(s.warnings[1].contains("DC_NONSENSE"), "{:?}", s.warnings);
    }

    #[test]
    fn values_that_make_no_sense_are_refused_naming_the_key() {
        let refused = |pairs: &[(&str, &str)], key: &str| {
            let err = Settings::load(None, env(pairs)).expect_err("refused").to_string();
            assert!(err.contains(key), "{pairs:?}: {err}");
            err
        };
        refused(&[("DC_DATA_DIR", "")], "general.data_dir");
        refused(&[("DC_RUNS_HTTP_TIMEOUT_SECS", "0")], "runs.http_timeout_secs");
        let err = refused(&[("DC_RUNS_BREAKER_COOLDOWN_SECS", "0")], "runs.breaker_cooldown_secs");
        assert!(err.contains("set runs.breaker_failures = 0"), "{err}");
        Settings::load(None, env(&[("DC_RUNS_BREAKER_COOLDOWN_SECS", "0"), ("DC_RUNS_BREAKER_FAILURES", "0")]))
            .expect("no cool-down needed with the breaker off");
        refused(&[("DC_DATABASE_CONNECT_TIMEOUT_SECS", "0")], "database.connect_timeout_secs");
        refused(&[("DC_RUNS_CPU_LIMIT_SECS", "0")], "runs.cpu_limit_secs");
        refused(&[("DC_GENERAL_MAX_PLUGIN_FILE_MB", "0")], "general.max_plugin_file_mb");
        refused(&[("DC_AUTH_ACCESS_TTL_SECS", "0")], "auth.access_ttl_secs");
        let err = refused(&[("DC_AUTH_KEY_GRACE_SECS", "60")], "auth.key_grace_secs");
        assert!(err.contains("at least auth.access_ttl_secs (900)"), "{err}");
        refused(&[("DC_AUTH_REFRESH_TTL_SECS", "60")], "auth.refresh_ttl_secs");
        refused(&[("DC_AUTH_ISSUER", " ")], "auth.issuer");
        refused(&[("DC_AUTH_TOKEN_RATE_PER_MINUTE", "0")], "auth.token_rate_per_minute");
        refused(&[("DC_AUTH_SUBJECT_CACHE_SECS", "301")], "auth.subject_cache_secs");
        refused(&[("DC_API_REQUESTS_PER_SECOND_PER_CLIENT", "0")], "api.requests_per_second_per_client");
        refused(&[("DC_API_BURST_PER_CLIENT", "0")], "api.burst_per_client");
        refused(&[("DC_API_APPS_CACHE_MS", "60001")], "api.apps_cache_ms");
        refused(&[("DC_API_MAX_UPLOAD_MB", "0")], "api.max_upload_mb");
        let s =
            Settings::load(None, env(&[("DC_AUTH_ISSUER", "123"), ("DC_AUTH_ACCESS_TTL_SECS", "60")])).expect("loads");
        assert_eq!((s.auth.issuer.as_str(), s.auth.access_ttl_secs), ("123", 60));
        let err = refused(&[("DC_RUNS_MEMORY_LIMIT_MB", "64")], "runs.memory_limit_mb");
        assert!(err.contains("at least 512"), "{err}");
        assert!(Settings::load(None, env(&[("DC_RUNS_MEMORY_LIMIT_MB", "512")])).is_ok());
        // two variables for one key
        let err = refused(&[("DC_DATA_DIR", "a"), ("DC_GENERAL_DATA_DIR", "b")], "general.data_dir");
        assert!(err.contains("DC_DATA_DIR and DC_GENERAL_DATA_DIR") && err.contains("keep one"), "{err}");
    }

    #[test]
    fn api_section_parses_and_refuses_bad_values_by_name() {
        let s = Settings::load(None, env(&[])).expect("defaults");
        assert!(!s.api.enabled);
        assert_eq!(s.api.listen.to_string(), "127.0.0.1:8080");
        let s = Settings::load(
            None,
            env(&[
                ("DC_API_LISTEN", "0.0.0.0:9090"),
                ("DC_API_CORS_ORIGINS", "https://ops.example.com, http://127.0.0.1:3000"),
            ]),
        )
        .expect("loads");
        assert_eq!(s.api.listen.to_string(), "0.0.0.0:9090");
        assert_eq!(s.api.cors_origins, vec!["https://ops.example.com", "http://127.0.0.1:3000"]);
        let err = Settings::load(None, env(&[("DC_API_LISTEN", "localhost:8080")])).expect_err("refused").to_string();
        assert!(err.contains("api.listen") && err.contains("localhost:8080"), "{err}");
        let err = Settings::load(None, env(&[("DC_API_LISTEN", "8080")])).expect_err("refused").to_string();
        assert!(err.contains("api.listen"), "{err}");
        for bad in ["https://ops.example.com/", "*", "ops.example.com", "https://a.example:99999"] {
            let err = Settings::load(None, env(&[("DC_API_CORS_ORIGINS", bad)])).expect_err("refused").to_string();
            assert!(err.contains("api.cors_origins[0]"), "{bad}: {err}");
        }
    }

    #[test]
    fn invalid_values_name_key_value_and_allowed() {
        let s = Settings::load(
            None,
            env(&[
                ("DC_CAPTCHA_PROVIDER", "anticaptcha"),
                ("DC_CAPTCHA_KEY_SECRET", "ac_key"),
                ("DC_CAPTCHA_MAX_COST_PER_RUN", "0.25"),
                ("DC_CAPTCHA_BASE_URL", "http://127.0.0.1:9"),
            ]),
        )
        .expect("captcha settings load");
        assert_eq!(s.captcha.provider, Some(CaptchaProvider::AntiCaptcha));
        assert_eq!((s.captcha.key_secret.as_deref(), s.captcha.max_cost_per_run), (Some("ac_key"), Some(0.25)));
        for (vars, key) in [
            (&[("DC_CAPTCHA_PROVIDER", "anticaptcha")][..], "captcha.key_secret"),
            (&[("DC_CAPTCHA_KEY_SECRET", "k")][..], "captcha.key_secret"),
            (&[("DC_CAPTCHA_PROVIDER", "anticaptcha"), ("DC_CAPTCHA_KEY_SECRET", "a b")][..], "captcha.key_secret"),
            (&[("DC_CAPTCHA_BASE_URL", "api.anti-captcha.com")][..], "captcha.base_url"),
            (&[("DC_CAPTCHA_MAX_COST_PER_RUN", "0")][..], "captcha.max_cost_per_run"),
            (&[("DC_CAPTCHA_POLL_INTERVAL_MS", "0")][..], "captcha.poll_interval_ms"),
        ] {
            let err = Settings::load(None, env(vars)).expect_err("refused").to_string();
            assert!(err.contains(key), "{vars:?}: {err}");
        }
        let err = Settings::load(None, env(&[("DC_CAPTCHA_PROVIDER", "2captcha")])).expect_err("refused").to_string();
        assert!(err.contains("captcha.provider") && err.contains("anticaptcha"), "{err}");
        let err = Settings::load(None, env(&[("DC_RUNS_THREADS", "0")])).expect_err("refused").to_string();
        assert_eq!(err, "invalid setting runs.threads = 0: 1 to 256");
        let err = Settings::load(None, env(&[("DC_DATABASE_URL", "mysql://x")])).expect_err("refused").to_string();
        assert!(err.contains("database.url") && err.contains("sqlite://PATH"), "{err}");
        let err = Settings::load(None, env(&[("DC_RUNS_THREADS", "many")])).expect_err("refused").to_string();
        assert!(err.contains("runs.threads: invalid type: string \"many\""), "{err}");
    }

    #[test]
    fn limits_parse_from_file_and_env_and_refuse_bad_values_by_name() {
        let s = Settings::load(None, env(&[])).expect("defaults");
        assert_eq!((s.limits.default_rps, s.limits.default_concurrency), (4.0, 4));
        assert!(s.limits.obeys_robots("a/b/c"));
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("dc.toml");
        std::fs::write(
            &file,
            "[limits]\ndefault_rps = 2.5\nrobots_ignore_apps = [\"a/b/c\"]\n\n[[limits.domain]]\nhost = \"example.com\"\nrps = 0.5\nconcurrency = 1\n",
        )
        .expect("write");
        let s = Settings::load(Some(&file), env(&[("DC_LIMITS_DEFAULT_CONCURRENCY", "8")])).expect("loads");
        assert_eq!((s.limits.default_rps, s.limits.default_concurrency), (2.5, 8));
        assert_eq!(s.limits.domain[0].host, "example.com");
        assert_eq!((s.limits.domain[0].rps, s.limits.domain[0].concurrency), (Some(0.5), Some(1)));
        assert!(!s.limits.obeys_robots("a/b/c") && s.limits.obeys_robots("a/b/d"));
        let s = Settings::load(
            None,
            env(&[("DC_LIMITS_ROBOTS_IGNORE_APPS", "a/b/c, d/e/f"), ("DC_LIMITS_SOCKET", "/tmp/x.sock")]),
        )
        .expect("loads");
        assert_eq!(s.limits.robots_ignore_apps, vec!["a/b/c", "d/e/f"]);
        assert_eq!(s.limits.socket.as_deref(), Some(Path::new("/tmp/x.sock")));
        assert!(s.limits.leases, "leases by default");
        let s = Settings::load(None, env(&[("DC_LIMITS_LEASES", "false")])).expect("loads");
        assert!(!s.limits.leases);
        let refused = |pairs: &[(&str, &str)], key: &str| {
            let err = Settings::load(None, env(pairs)).expect_err("refused").to_string();
            assert!(err.contains(key), "{key}: {err}");
        };
        refused(&[("DC_LIMITS_DEFAULT_RPS", "-1")], "limits.default_rps");
        refused(&[("DC_LIMITS_DEFAULT_CONCURRENCY", "0")], "limits.default_concurrency");
        refused(&[("DC_LIMITS_ROBOTS_IGNORE_APPS", "misbehave")], "limits.robots_ignore_apps[0]");
        refused(&[("DC_LIMITS_ROBOTS_TTL_SECS", "0")], "limits.robots_ttl_secs");
        std::fs::write(&file, "[[limits.domain]]\nhost = \"https://example.com/\"\n").expect("write");
        let err = Settings::load(Some(&file), env(&[])).expect_err("refused").to_string();
        assert!(err.contains("limits.domain[0].host") && err.contains("without scheme"), "{err}");
    }
}
