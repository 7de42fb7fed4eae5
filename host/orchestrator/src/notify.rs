//! Notifications (roadmap WP-07): a [`Notifier`] sends a notice (severity,
//! title, body, structured data) to one channel; [`Notifications`] fans a
//! notice out to every configured channel whose minimum severity it meets,
//! with retries, in the background — a failing channel is logged and never
//! slows or breaks a run. Channels: a generic JSON webhook signed with
//! HMAC-SHA256 (`X-DC-Signature: sha256=<hex>` over the exact body), a Slack
//! incoming webhook (`{"text": …}`), the Telegram Bot API (`sendMessage`), a
//! Microsoft Teams Workflows webhook (an Adaptive Card message), and e-mail
//! through an SMTP relay ([`lettre`] over rustls: STARTTLS required, or TLS from
//! the first byte; plain text only to a loopback relay), logging in with
//! `username` and `password` and trusting the system's roots plus `ca_file`.

use std::sync::Arc;
use std::time::Duration;

use dc_core::enums::AlertSeverity;
use dc_core::settings::{ChannelKind, ChannelSettings, NotifySettings, SmtpTls};
use hmac::{KeyInit, Mac};
use lettre::message::Mailbox;
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Serialize;
use serde_json::Value;

/// One notice.
#[derive(Debug, Clone, Serialize)]
pub struct Notice {
    /// What happened: `app_disabled`, `run_failed`, `run_finished`, `host_started`, `host_stopped`.
    pub event: String,
    /// How serious.
    pub severity: AlertSeverity,
    /// One line.
    pub title: String,
    /// More detail.
    pub body: String,
    /// The host that sends it.
    pub host: String,
    /// Structured detail (app, run id, counts, reason).
    pub data: Value,
}

/// Sends notices to one channel.
pub trait Notifier: Send + Sync {
    /// Sends one notice; the error says what the channel answered.
    fn send<'a>(
        &'a self,
        notice: &'a Notice,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>>;
    /// The channel, for logs (never its secret).
    fn describe(&self) -> String;
}

fn rank(s: AlertSeverity) -> u8 {
    match s {
        AlertSeverity::Info => 0,
        AlertSeverity::Warning => 1,
        AlertSeverity::Error => 2,
        AlertSeverity::Critical => 3,
    }
}

/// The HMAC-SHA256 of `body` under `key`, as lowercase hex.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = <hmac::Hmac<sha2::Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

struct Http {
    kind: ChannelKind,
    url: String,
    secret: Option<String>,
    chat_id: Option<String>,
    client: reqwest::Client,
}

impl Notifier for Http {
    fn send<'a>(
        &'a self,
        notice: &'a Notice,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            let line = format!("{} ({:?}, {})", notice.title, notice.severity, notice.host);
            let (url, body) = match self.kind {
                // `from_settings` makes e-mail channels an `Email`
                ChannelKind::Email => return Err("an e-mail channel cannot be sent over HTTP".into()),
                ChannelKind::Webhook => (self.url.clone(), serde_json::to_vec(notice)),
                ChannelKind::Slack => (
                    self.url.clone(),
                    serde_json::to_vec(&serde_json::json!({"text": format!("*{line}*\n{}", notice.body)})),
                ),
                ChannelKind::Telegram => (
                    format!("{}/sendMessage", self.url.trim_end_matches('/')),
                    serde_json::to_vec(&serde_json::json!({
                        "chat_id": self.chat_id,
                        "text": format!("{line}\n{}", notice.body),
                        "disable_web_page_preview": true
                    })),
                ),
                ChannelKind::Teams => (
                    self.url.clone(),
                    serde_json::to_vec(&serde_json::json!({
                        "type": "message",
                        "attachments": [{
                            "contentType": "application/vnd.microsoft.card.adaptive",
                            "content": {
                                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                                "type": "AdaptiveCard",
                                "version": "1.4",
                                "body": [
                                    {"type": "TextBlock", "text": line, "weight": "Bolder", "wrap": true},
                                    {"type": "TextBlock", "text": notice.body, "wrap": true}
                                ]
                            }
                        }]
                    })),
                ),
            };
            let body = body.map_err(|e| e.to_string())?;
            let mut req = self
                .client
                .post(&url)
                .header("content-type", "application/json")
                .header("x-dc-event", notice.event.as_str());
            if let (ChannelKind::Webhook, Some(key)) = (self.kind, &self.secret) {
                req = req.header("x-dc-signature", format!("sha256={}", signature(key.as_bytes(), &body)));
            }
            let resp = req.body(body).send().await.map_err(|e| format!("cannot reach it: {e}"))?;
            let status = resp.status();
            if !status.is_success() {
                return Err(format!("it answered {status}"));
            }
            // the Bot API answers 200 with {"ok": false, "description": …} for some refusals
            if self.kind == ChannelKind::Telegram {
                let bytes = resp.bytes().await.map_err(|e| format!("its answer broke off: {e}"))?;
                let answer: Value = serde_json::from_slice(&bytes).map_err(|e| format!("it answered no JSON: {e}"))?;
                if answer["ok"] != Value::Bool(true) {
                    return Err(format!("it refused the message: {}", answer["description"]));
                }
            }
            Ok(())
        })
    }

    fn describe(&self) -> String {
        let host =
            reqwest::Url::parse(&self.url).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_default();
        format!("{:?} channel to {host}", self.kind).to_lowercase()
    }
}

/// The e-mail channel: one message per notice, through an SMTP relay.
struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    /// `host:port`, for logs.
    relay: String,
}

impl Email {
    /// The channel `c` (an `email` channel whose settings were validated when
    /// they loaded, and whose `${secret:…}` references are resolved); the error
    /// names the field at fault.
    fn new(i: usize, c: &ChannelSettings) -> Result<Email, String> {
        let key = |field: &str| format!("notify.channels[{i}].{field}");
        let relay = c.smtp_relay().map_err(|e| format!("{}: {}", key(e.field), e.message))?;
        let mailbox = |field: String, v: &str| {
            v.parse::<Mailbox>().map_err(|e| format!("{field}: {v:?} is not an e-mail address ({e})"))
        };
        let from = mailbox(key("from"), c.from.as_deref().unwrap_or_default())?;
        let to =
            c.to.iter().enumerate().map(|(j, t)| mailbox(key(&format!("to[{j}]")), t)).collect::<Result<_, _>>()?;
        let tls = match relay.tls {
            SmtpTls::None => Tls::None,
            mode => {
                let mut params = TlsParameters::builder(relay.host.clone());
                if let Some(path) = &c.ca_file {
                    let pem = std::fs::read(path)
                        .map_err(|e| format!("{}: cannot read {} ({e})", key("ca_file"), path.display()))?;
                    let certs = Certificate::from_pem(&pem).map_err(|e| {
                        format!("{}: {} holds no usable certificate ({e})", key("ca_file"), path.display())
                    })?;
                    params = params.add_root_certificate(certs);
                }
                let params = params.build_rustls().map_err(|e| match &c.ca_file {
                    // what can fail here is a root certificate that does not parse
                    Some(path) => {
                        format!("{}: {} holds a certificate that cannot be used ({e})", key("ca_file"), path.display())
                    }
                    None => format!("{}: cannot set up TLS ({e})", key("url")),
                })?;
                if mode == SmtpTls::Tls { Tls::Wrapper(params) } else { Tls::Required(params) }
            }
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(relay.host.clone())
            .port(relay.port)
            .tls(tls)
            .timeout(Some(Duration::from_secs(10)));
        if let (Some(user), Some(password)) = (&c.username, &c.password) {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        let relay = if relay.host.contains(':') {
            format!("[{}]:{}", relay.host, relay.port)
        } else {
            format!("{}:{}", relay.host, relay.port)
        };
        Ok(Email { transport: builder.build(), from, to, relay })
    }

    /// The message of `notice`: the subject names it, the body holds its text
    /// and its structured data as pretty JSON.
    fn message(&self, notice: &Notice) -> Result<Message, String> {
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(format!("[dc-host] {} ({})", notice.title, notice.severity.as_str()))
            .date_now()
            .message_id(None)
            .header(ContentType::TEXT_PLAIN)
            .raw_header(HeaderValue::new(HeaderName::new_from_ascii_str("X-DC-Event"), notice.event.clone()));
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        let data = serde_json::to_string_pretty(&notice.data).map_err(|e| e.to_string())?;
        let mut body = String::new();
        if !notice.body.is_empty() {
            body.push_str(&notice.body);
            body.push_str("\n\n");
        }
        body.push_str(&format!(
            "event: {}\nseverity: {}\nhost: {}\n\n{data}\n",
            notice.event,
            notice.severity.as_str(),
            notice.host
        ));
        builder.body(body).map_err(|e| format!("cannot build the message: {e}"))
    }
}

impl Notifier for Email {
    fn send<'a>(
        &'a self,
        notice: &'a Notice,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            let message = self.message(notice)?;
            self.transport.send(message).await.map_err(|e| format!("the mail relay did not take it: {e}"))?;
            Ok(())
        })
    }

    fn describe(&self) -> String {
        format!("email channel to {}", self.relay)
    }
}

/// Every configured channel, with its minimum severity.
#[derive(Clone, Default)]
pub struct Notifications {
    channels: Vec<(AlertSeverity, Arc<dyn Notifier>)>,
    /// Whether successful runs are notified too.
    pub run_finished: bool,
    retry: Duration,
}

impl Notifications {
    /// The channels of `settings` (their `${secret:…}` references resolved);
    /// the error names the channel's field that cannot be used (an unreadable
    /// `ca_file`, say).
    pub fn from_settings(settings: &NotifySettings) -> Result<Notifications, String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("dc-host/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        let channels = settings
            .channels
            .iter()
            .enumerate()
            .map(|(i, c): (usize, &ChannelSettings)| {
                let n: Arc<dyn Notifier> = match c.kind {
                    ChannelKind::Email => Arc::new(Email::new(i, c)?),
                    kind => Arc::new(Http {
                        kind,
                        url: c.url.clone(),
                        secret: c.secret.clone(),
                        chat_id: c.chat_id.clone(),
                        client: client.clone(),
                    }),
                };
                Ok((c.min_severity, n))
            })
            .collect::<Result<_, String>>()?;
        Ok(Notifications { channels, run_finished: settings.run_finished, retry: Duration::from_millis(500) })
    }

    /// Sends `notice` to every channel it is severe enough for, each in a task
    /// of its own with up to three attempts; returns the tasks (the caller may
    /// wait for them, e.g. before exiting).
    pub fn dispatch(&self, notice: Notice) -> Vec<tokio::task::JoinHandle<()>> {
        let notice = Arc::new(notice);
        self.channels
            .iter()
            .filter(|(min, _)| rank(notice.severity) >= rank(*min))
            .map(|(_, n)| {
                let (n, notice, retry) = (n.clone(), notice.clone(), self.retry);
                tokio::spawn(async move {
                    let mut wait = retry;
                    for attempt in 1..=3 {
                        match n.send(&notice).await {
                            Ok(()) => return,
                            Err(e) if attempt < 3 => {
                                tracing::warn!(channel = %n.describe(), attempt, error = %e, "notification failed; retrying");
                                tokio::time::sleep(wait).await;
                                wait *= 2;
                            }
                            Err(e) => tracing::error!(
                                channel = %n.describe(), event = %notice.event, error = %e,
                                "notification failed three times and is dropped"
                            ),
                        }
                    }
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256() {
        // RFC 4231 test case 2
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn an_email_names_the_notice_and_carries_its_data() {
        let c: ChannelSettings = serde_json::from_value(serde_json::json!({
            "kind": "email", "url": "smtp://localhost:2525", "tls": "none",
            "from": "dc-host <alerts@example.org>", "to": ["ops@example.org", "b@example.org"]
        }))
        .expect("channel");
        let email = Email::new(0, &c).expect("email channel");
        assert_eq!(email.describe(), "email channel to localhost:2525");
        let notice = Notice {
            event: "run_failed".into(),
            severity: AlertSeverity::Error,
            title: "shop/acme/prices: run failed".into(),
            body: "the plugin returned an error".into(),
            host: "h1".into(),
            data: serde_json::json!({"app": "shop/acme/prices", "runtime_id": "r-1"}),
        };
        let m = email.message(&notice).expect("message");
        let text = String::from_utf8(m.formatted()).expect("utf-8");
        for line in [
            "From: dc-host <alerts@example.org>\r\n",
            "To: ops@example.org, b@example.org\r\n",
            "Subject: [dc-host] shop/acme/prices: run failed (ERROR)\r\n",
            "X-DC-Event: run_failed\r\n",
            "Content-Type: text/plain; charset=utf-8\r\n",
        ] {
            assert!(text.contains(line), "{line:?} in {text}");
        }
        assert!(text.contains("\r\nDate: ") && text.contains("\r\nMessage-ID: <"), "{text}");
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.replace("\r\n", "\n")).unwrap_or_default();
        assert!(
            body.starts_with("the plugin returned an error\n\nevent: run_failed\nseverity: ERROR\nhost: h1\n"),
            "{body}"
        );
        assert!(body.contains("  \"runtime_id\": \"r-1\""), "{body}");
        assert_eq!(m.envelope().to().len(), 2);
    }

    #[test]
    fn severities_are_ordered() {
        assert!(rank(AlertSeverity::Critical) > rank(AlertSeverity::Error));
        assert!(rank(AlertSeverity::Warning) > rank(AlertSeverity::Info));
    }
}
