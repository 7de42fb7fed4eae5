//! Notifications (roadmap WP-07): a [`Notifier`] sends a notice (severity,
//! title, body, structured data) to one channel; [`Notifications`] fans a
//! notice out to every configured channel whose minimum severity it meets,
//! with retries, in the background — a failing channel is logged and never
//! slows or breaks a run. Channels: a generic JSON webhook signed with
//! HMAC-SHA256 (`X-DC-Signature: sha256=<hex>` over the exact body), a Slack
//! incoming webhook (`{"text": …}`), the Telegram Bot API (`sendMessage`) and a
//! Microsoft Teams Workflows webhook (an Adaptive Card message). E-mail would
//! attach as a further `Notifier`.

use std::sync::Arc;
use std::time::Duration;

use dc_core::enums::AlertSeverity;
use dc_core::settings::{ChannelKind, ChannelSettings, NotifySettings};
use hmac::{KeyInit, Mac};
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

/// Every configured channel, with its minimum severity.
#[derive(Clone, Default)]
pub struct Notifications {
    channels: Vec<(AlertSeverity, Arc<dyn Notifier>)>,
    /// Whether successful runs are notified too.
    pub run_finished: bool,
    retry: Duration,
}

impl Notifications {
    /// The channels of `settings`.
    pub fn from_settings(settings: &NotifySettings) -> Notifications {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("dc-host/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        let channels = settings
            .channels
            .iter()
            .map(|c: &ChannelSettings| {
                let n: Arc<dyn Notifier> = Arc::new(Http {
                    kind: c.kind,
                    url: c.url.clone(),
                    secret: c.secret.clone(),
                    chat_id: c.chat_id.clone(),
                    client: client.clone(),
                });
                (c.min_severity, n)
            })
            .collect();
        Notifications { channels, run_finished: settings.run_finished, retry: Duration::from_millis(500) }
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
    fn severities_are_ordered() {
        assert!(rank(AlertSeverity::Critical) > rank(AlertSeverity::Error));
        assert!(rank(AlertSeverity::Warning) > rank(AlertSeverity::Info));
    }
}
