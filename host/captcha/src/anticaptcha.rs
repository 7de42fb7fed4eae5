//! A client of anti-captcha.com's JSON API (<https://anti-captcha.com/apidoc>):
//! every method is a `POST` of a JSON object carrying `clientKey` to
//! `<base_url>/<method>`, answered with `errorId` (0: success) and, on an
//! error, `errorCode` and `errorDescription`.
//!
//! - `createTask` `{clientKey, task: {type, ...}}` → `{taskId}`; the task types
//!   used are `RecaptchaV2TaskProxyless` (`websiteURL`, `websiteKey`,
//!   `isInvisible`), `RecaptchaV3TaskProxyless` (`minScore`, `pageAction`),
//!   `HCaptchaTaskProxyless` and `ImageToTextTask` (`body`, base64). While the
//!   service answers `ERROR_NO_SLOT_AVAILABLE` the task is created again after
//!   a growing wait.
//! - `getTaskResult` `{clientKey, taskId}` → `{status: "processing"}` or
//!   `{status: "ready", solution, cost}`: polled first after
//!   [`Polling::first_wait`], then every [`Polling::interval`] growing by
//!   [`Polling::backoff`] (anti-captcha's own clients wait 5 s, then poll every
//!   2 s; the service keeps a task for 120 polls or 5 minutes).
//!   `cost` arrives as a decimal string (`"0.000700"`) or a number.
//! - `getBalance` `{clientKey}` → `{balance}`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::error::CaptchaError;
use crate::sleep::{Sleeper, TokioSleeper};
use crate::{BoxFuture, CaptchaSolver, Solved, Task};

/// Where anti-captcha's API is.
pub const DEFAULT_BASE_URL: &str = "https://api.anti-captcha.com";

const PROVIDER: &str = "anti-captcha";

/// When to ask for a task's result and when to give up.
#[derive(Debug, Clone, PartialEq)]
pub struct Polling {
    /// Wait after `createTask` before the first `getTaskResult`.
    pub first_wait: Duration,
    /// Wait between two polls at first.
    pub interval: Duration,
    /// Each wait between polls is the previous one times this, up to `max_interval`.
    pub backoff: f64,
    /// The longest wait between polls.
    pub max_interval: Duration,
    /// Give up after this many polls of one task.
    pub max_polls: u32,
    /// Give up after waiting this long in total for one task.
    pub max_wait: Duration,
    /// `createTask` attempts while the service has no free worker.
    pub no_slot_attempts: u32,
    /// The first wait before creating the task again (doubles each time).
    pub no_slot_wait: Duration,
    /// Polls that may fail in a row on the network before the task is given up.
    pub poll_failures: u32,
}

impl Default for Polling {
    fn default() -> Self {
        Polling {
            first_wait: Duration::from_secs(5),
            interval: Duration::from_secs(2),
            backoff: 1.25,
            max_interval: Duration::from_secs(5),
            max_polls: 120,
            max_wait: Duration::from_secs(300),
            no_slot_attempts: 5,
            no_slot_wait: Duration::from_secs(3),
            poll_failures: 3,
        }
    }
}

/// The anti-captcha.com client.
pub struct AntiCaptcha {
    http: reqwest::Client,
    base_url: String,
    client_key: String,
    polling: Polling,
    sleeper: Arc<dyn Sleeper>,
}

impl std::fmt::Debug for AntiCaptcha {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // never the client key
        f.debug_struct("AntiCaptcha").field("base_url", &self.base_url).field("polling", &self.polling).finish()
    }
}

/// What one poll found.
enum Poll {
    Processing,
    Ready(Solved),
}

impl AntiCaptcha {
    /// A client of the service at `base_url` (e.g. [`DEFAULT_BASE_URL`]) with
    /// the account's client key.
    pub fn new(base_url: &str, client_key: &str) -> Result<AntiCaptcha, CaptchaError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("dc-host/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CaptchaError::Transport {
                provider: PROVIDER.into(),
                url: base_url.into(),
                detail: format!("cannot build the HTTP client: {e}"),
            })?;
        Ok(AntiCaptcha {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            client_key: client_key.trim().to_string(),
            polling: Polling::default(),
            sleeper: Arc::new(TokioSleeper),
        })
    }

    /// Uses another polling schedule.
    pub fn with_polling(mut self, polling: Polling) -> AntiCaptcha {
        self.polling = polling;
        self
    }

    /// Waits with `sleeper` (tests inject one that does not sleep).
    pub fn with_sleeper(mut self, sleeper: Arc<dyn Sleeper>) -> AntiCaptcha {
        self.sleeper = sleeper;
        self
    }

    /// The `task` object of `createTask`.
    pub fn task_json(task: &Task) -> Value {
        match task {
            Task::RecaptchaV2 { website_url, website_key, invisible } => {
                let mut t =
                    json!({"type": "RecaptchaV2TaskProxyless", "websiteURL": website_url, "websiteKey": website_key});
                if *invisible {
                    t["isInvisible"] = json!(true);
                }
                t
            }
            Task::RecaptchaV3 { website_url, website_key, min_score, page_action } => {
                let mut t = json!({"type": "RecaptchaV3TaskProxyless", "websiteURL": website_url,
                    "websiteKey": website_key, "minScore": min_score});
                if let Some(a) = page_action {
                    t["pageAction"] = json!(a);
                }
                t
            }
            Task::Hcaptcha { website_url, website_key } => {
                json!({"type": "HCaptchaTaskProxyless", "websiteURL": website_url, "websiteKey": website_key})
            }
            Task::Image { body_base64 } => json!({"type": "ImageToTextTask", "body": body_base64}),
        }
    }

    /// POSTs `body` (with the client key) to `method` and returns the answer,
    /// or the service's error as a typed error.
    async fn call(&self, method: &str, mut body: Value) -> Result<Value, CaptchaError> {
        body["clientKey"] = json!(self.client_key);
        let url = format!("{}/{method}", self.base_url);
        let transport =
            |detail: String| CaptchaError::Transport { provider: PROVIDER.into(), url: url.clone(), detail };
        let resp = self
            .http
            .post(&url)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| transport(dc_net::error_chain(&e)))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| transport(dc_net::error_chain(&e)))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
            return Err(transport(format!("HTTP {status}: {text}")));
        }
        let protocol =
            |detail: String| CaptchaError::Protocol { provider: PROVIDER.into(), method: method.into(), detail };
        let answer: Value = serde_json::from_slice(&bytes).map_err(|e| protocol(format!("not JSON ({e})")))?;
        match answer.get("errorId").and_then(Value::as_u64) {
            Some(0) => Ok(answer),
            Some(_) => {
                let code = answer["errorCode"].as_str().unwrap_or("ERROR_UNKNOWN");
                let description = answer["errorDescription"].as_str().unwrap_or("no description");
                Err(CaptchaError::from_code(PROVIDER, code, description))
            }
            None => Err(protocol(format!("no errorId in {answer}"))),
        }
    }

    /// `createTask`, created again with a growing wait while the service has
    /// no free worker; returns the task id.
    pub async fn create_task(&self, task: &Task) -> Result<u64, CaptchaError> {
        task.validate()?;
        let body = json!({"task": AntiCaptcha::task_json(task)});
        let mut wait = self.polling.no_slot_wait;
        let attempts = self.polling.no_slot_attempts.max(1);
        for attempt in 1..=attempts {
            match self.call("createTask", body.clone()).await {
                Ok(answer) => {
                    return answer["taskId"].as_u64().ok_or_else(|| CaptchaError::Protocol {
                        provider: PROVIDER.into(),
                        method: "createTask".into(),
                        detail: format!("no taskId in {answer}"),
                    });
                }
                Err(CaptchaError::NoSlotAvailable { .. }) if attempt < attempts => {
                    tracing::info!(
                        attempt,
                        wait_ms = wait.as_millis() as u64,
                        "anti-captcha has no free worker; retrying"
                    );
                    self.sleeper.sleep(wait).await;
                    wait = wait.saturating_mul(2);
                }
                Err(CaptchaError::NoSlotAvailable { provider, .. }) => {
                    return Err(CaptchaError::NoSlotAvailable { provider, attempts });
                }
                Err(e) => return Err(e),
            }
        }
        Err(CaptchaError::NoSlotAvailable { provider: PROVIDER.into(), attempts })
    }

    /// One `getTaskResult`.
    async fn poll(&self, task_id: u64) -> Result<Poll, CaptchaError> {
        let answer = self.call("getTaskResult", json!({"taskId": task_id})).await?;
        let protocol = |detail: String| CaptchaError::Protocol {
            provider: PROVIDER.into(),
            method: "getTaskResult".into(),
            detail,
        };
        match answer["status"].as_str() {
            Some("processing") => Ok(Poll::Processing),
            Some("ready") => {
                let solution = &answer["solution"];
                let text = solution
                    .get("gRecaptchaResponse")
                    .or_else(|| solution.get("token"))
                    .or_else(|| solution.get("text"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| protocol(format!("a ready task without gRecaptchaResponse or text: {solution}")))?;
                let cost = match &answer["cost"] {
                    Value::String(s) => s.trim().parse::<f64>().ok(),
                    Value::Number(n) => n.as_f64(),
                    Value::Null => Some(0.0),
                    _ => None,
                }
                .filter(|c| c.is_finite() && *c >= 0.0)
                .ok_or_else(|| protocol(format!("cost {} is not an amount", answer["cost"])))?;
                Ok(Poll::Ready(Solved {
                    answer: text.to_string(),
                    user_agent: solution.get("userAgent").and_then(Value::as_str).map(str::to_string),
                    cost,
                    task_id,
                }))
            }
            other => Err(protocol(format!("status {other:?} is neither \"processing\" nor \"ready\""))),
        }
    }

    /// Creates the task and polls until it is ready.
    pub async fn solve_task(&self, task: &Task) -> Result<Solved, CaptchaError> {
        let task_id = self.create_task(task).await?;
        let p = &self.polling;
        let mut waited = p.first_wait;
        self.sleeper.sleep(p.first_wait).await;
        let mut interval = p.interval;
        let mut failures = 0;
        let mut polls = 0;
        loop {
            polls += 1;
            match self.poll(task_id).await {
                Ok(Poll::Ready(solved)) => {
                    tracing::info!(task_id, kind = task.kind(), polls, cost = solved.cost, "captcha solved");
                    return Ok(solved);
                }
                Ok(Poll::Processing) => failures = 0,
                // the task is paid for: a poll lost on the network is asked again
                Err(e @ CaptchaError::Transport { .. }) => {
                    failures += 1;
                    if failures >= p.poll_failures.max(1) {
                        return Err(e);
                    }
                    tracing::warn!(task_id, error = %e, "polling anti-captcha failed; asking again");
                }
                Err(e) => return Err(e),
            }
            if polls >= p.max_polls || waited + interval > p.max_wait {
                return Err(CaptchaError::Timeout {
                    provider: PROVIDER.into(),
                    task_id,
                    polls,
                    waited_secs: waited.as_secs(),
                });
            }
            self.sleeper.sleep(interval).await;
            waited += interval;
            interval = interval.mul_f64(p.backoff.max(1.0)).min(p.max_interval.max(p.interval));
        }
    }

    /// `getBalance`: the account's balance in USD.
    pub async fn get_balance(&self) -> Result<f64, CaptchaError> {
        let answer = self.call("getBalance", json!({})).await?;
        answer["balance"].as_f64().ok_or_else(|| CaptchaError::Protocol {
            provider: PROVIDER.into(),
            method: "getBalance".into(),
            detail: format!("no balance in {answer}"),
        })
    }
}

impl CaptchaSolver for AntiCaptcha {
    fn name(&self) -> &str {
        PROVIDER
    }

    fn solve<'a>(&'a self, task: &'a Task) -> BoxFuture<'a, Result<Solved, CaptchaError>> {
        Box::pin(self.solve_task(task))
    }

    fn balance(&self) -> BoxFuture<'_, Result<f64, CaptchaError>> {
        Box::pin(self.get_balance())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{FakeAntiCaptcha, Script};
    use crate::sleep::RecordingSleeper;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    fn v2() -> Task {
        Task::RecaptchaV2 {
            website_url: "https://shop.test/login".into(),
            website_key: "6Le-site-key".into(),
            invisible: false,
        }
    }

    async fn client(fake: &FakeAntiCaptcha) -> (AntiCaptcha, Arc<RecordingSleeper>) {
        let sleeper = Arc::new(RecordingSleeper::default());
        let c = AntiCaptcha::new(&fake.base_url, KEY).expect("client").with_sleeper(sleeper.clone());
        (c, sleeper)
    }

    #[tokio::test]
    async fn a_recaptcha_is_created_polled_until_ready_and_costed() {
        let fake = FakeAntiCaptcha::start(Script::new(KEY)).await;
        let (c, sleeper) = client(&fake).await;
        let solved = c.solve_task(&v2()).await.expect("solved");
        assert_eq!(solved.answer, format!("token-{}", solved.task_id));
        assert_eq!(solved.cost, 0.0015);
        // the exact documented JSON reached the service
        let reqs = fake.requests();
        let paths: Vec<&str> = reqs.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["/createTask", "/getTaskResult", "/getTaskResult", "/getTaskResult"]);
        assert_eq!(
            reqs[0].1,
            json!({"clientKey": KEY, "task": {"type": "RecaptchaV2TaskProxyless",
                "websiteURL": "https://shop.test/login", "websiteKey": "6Le-site-key"}})
        );
        assert_eq!(reqs[1].1, json!({"clientKey": KEY, "taskId": solved.task_id}));
        // anti-captcha's recommended first wait, then the interval growing by the backoff
        let s = Duration::from_secs;
        assert_eq!(sleeper.waits(), [s(5), s(2), Duration::from_millis(2500)]);
    }

    #[tokio::test]
    async fn every_task_type_sends_its_documented_fields() {
        let fake = FakeAntiCaptcha::start(Script::new(KEY).processing_polls(0)).await;
        let (c, _) = client(&fake).await;
        let v3 = Task::RecaptchaV3 {
            website_url: "https://a.test/".into(),
            website_key: "k3".into(),
            min_score: 0.7,
            page_action: Some("login".into()),
        };
        let h = Task::Hcaptcha { website_url: "https://a.test/".into(), website_key: "kh".into() };
        let img = Task::Image { body_base64: "iVBORw0KGgo=".into() };
        for t in [&v3, &h, &img] {
            c.solve_task(t).await.expect("solved");
        }
        let tasks: Vec<Value> =
            fake.requests().into_iter().filter(|(p, _)| p == "/createTask").map(|(_, b)| b["task"].clone()).collect();
        assert_eq!(
            tasks,
            [
                json!({"type": "RecaptchaV3TaskProxyless", "websiteURL": "https://a.test/", "websiteKey": "k3",
                    "minScore": 0.7, "pageAction": "login"}),
                json!({"type": "HCaptchaTaskProxyless", "websiteURL": "https://a.test/", "websiteKey": "kh"}),
                json!({"type": "ImageToTextTask", "body": "iVBORw0KGgo="}),
            ]
        );
        let image = c.solve_task(&img).await.expect("image solved");
        assert_eq!(image.answer, "text-of-image");
        let h = c.solve_task(&h).await.expect("hcaptcha solved");
        assert_eq!(h.user_agent.as_deref(), Some("Mozilla/5.0 (fake)"));
    }

    #[tokio::test]
    async fn errors_are_typed_and_name_the_fix() {
        let fake = FakeAntiCaptcha::start(Script::new(KEY)).await;
        let wrong = AntiCaptcha::new(&fake.base_url, "nope").expect("client");
        let e = wrong.solve_task(&v2()).await.expect_err("wrong key");
        assert!(matches!(e, CaptchaError::KeyDoesNotExist { .. }), "{e:?}");
        assert!(e.to_string().contains("captcha.key_secret"), "{e}");

        let broke = FakeAntiCaptcha::start(Script::new(KEY).create_errors(&["ERROR_ZERO_BALANCE"])).await;
        let (c, _) = client(&broke).await;
        let e = c.solve_task(&v2()).await.expect_err("no funds");
        assert!(matches!(e, CaptchaError::ZeroBalance { .. }) && e.to_string().contains("top it up"), "{e}");

        let hard = FakeAntiCaptcha::start(Script::new(KEY).result_error("ERROR_CAPTCHA_UNSOLVABLE")).await;
        let (c, _) = client(&hard).await;
        let e = c.solve_task(&v2()).await.expect_err("unsolvable");
        assert!(matches!(e, CaptchaError::Unsolvable { .. }), "{e:?}");

        let odd = FakeAntiCaptcha::start(Script::new(KEY).create_errors(&["ERROR_RECAPTCHA_INVALID_SITEKEY"])).await;
        let (c, _) = client(&odd).await;
        let e = c.solve_task(&v2()).await.expect_err("bad site key").to_string();
        assert!(e.contains("ERROR_RECAPTCHA_INVALID_SITEKEY"), "{e}");
    }

    #[tokio::test]
    async fn no_free_worker_is_retried_with_a_growing_wait() {
        let busy = Script::new(KEY).create_errors(&["ERROR_NO_SLOT_AVAILABLE", "ERROR_NO_SLOT_AVAILABLE"]);
        let fake = FakeAntiCaptcha::start(busy.processing_polls(0)).await;
        let (c, sleeper) = client(&fake).await;
        c.solve_task(&v2()).await.expect("solved on the third attempt");
        let creates = fake.requests().iter().filter(|(p, _)| p == "/createTask").count();
        assert_eq!(creates, 3);
        assert_eq!(sleeper.waits()[..2], [Duration::from_secs(3), Duration::from_secs(6)]);

        let always = Script::new(KEY).create_errors(&["ERROR_NO_SLOT_AVAILABLE"; 9]);
        let fake = FakeAntiCaptcha::start(always).await;
        let (c, _) = client(&fake).await;
        let e = c.solve_task(&v2()).await.expect_err("never a slot");
        assert!(matches!(e, CaptchaError::NoSlotAvailable { attempts: 5, .. }), "{e:?}");
        assert!(e.to_string().contains("raise the maximum bid"), "{e}");
    }

    #[tokio::test]
    async fn a_task_never_ready_is_given_up() {
        let fake = FakeAntiCaptcha::start(Script::new(KEY).processing_polls(u32::MAX)).await;
        let (c, sleeper) = client(&fake).await;
        let c = c.with_polling(Polling { max_polls: 4, ..Polling::default() });
        let e = c.solve_task(&v2()).await.expect_err("timeout");
        assert!(matches!(e, CaptchaError::Timeout { polls: 4, .. }), "{e:?}");
        assert_eq!(sleeper.waits().len(), 4, "first wait + 3 between polls");
    }

    #[tokio::test]
    async fn balance_is_read() {
        let fake = FakeAntiCaptcha::start(Script::new(KEY).balance(12.5)).await;
        let (c, _) = client(&fake).await;
        assert_eq!(c.get_balance().await.expect("balance"), 12.5);
        assert_eq!(fake.requests()[0], ("/getBalance".to_string(), json!({"clientKey": KEY})));
    }

    #[test]
    fn debug_never_shows_the_key() {
        let c = AntiCaptcha::new(DEFAULT_BASE_URL, KEY).expect("client");
        assert!(!format!("{c:?}").contains(KEY));
    }
}
