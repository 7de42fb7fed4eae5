//! dc-captcha: CAPTCHA solving for plugin runs. [`CaptchaSolver`] is what a
//! provider implements; [`anticaptcha::AntiCaptcha`] speaks anti-captcha.com's
//! documented JSON API (`createTask`, `getTaskResult` polled with backoff,
//! `getBalance`), and [`budget::Budgeted`] wraps any solver with a per-run cost
//! budget. The worker (`dc_runtime::host_call`) answers a plugin's
//! `captcha.solve` host call with one of these.
//!
//! Waiting is injected ([`sleep::Sleeper`]), so tests poll a loopback imitation
//! of the service ([`fake`], cargo feature `fake`) without sleeping.
//!
//! Invariant: this crate knows nothing of plugins or the database; it turns a
//! [`Task`] into a [`Solved`] answer or a [`CaptchaError`] that says what to do.

use std::future::Future;
use std::pin::Pin;

pub mod anticaptcha;
pub mod budget;
pub mod error;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod sleep;

pub use anticaptcha::{AntiCaptcha, Polling};
pub use budget::Budgeted;
pub use error::CaptchaError;
pub use sleep::{Sleeper, TokioSleeper};

/// A boxed future (the solver trait is used as `dyn CaptchaSolver`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What to solve.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Task {
    /// Google reCAPTCHA v2 on `website_url` with site key `website_key`.
    RecaptchaV2 {
        /// The page.
        website_url: String,
        /// The site key.
        website_key: String,
        /// The invisible variant.
        invisible: bool,
    },
    /// Google reCAPTCHA v3.
    RecaptchaV3 {
        /// The page.
        website_url: String,
        /// The site key.
        website_key: String,
        /// 0.3, 0.7 or 0.9.
        min_score: f64,
        /// The page's action, if any.
        page_action: Option<String>,
    },
    /// hCaptcha.
    Hcaptcha {
        /// The page.
        website_url: String,
        /// The site key.
        website_key: String,
    },
    /// Text in an image, base64-encoded.
    Image {
        /// The image file as base64.
        body_base64: String,
    },
}

impl Task {
    /// A short name for logs and errors (`recaptcha_v2`, `image`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Task::RecaptchaV2 { .. } => "recaptcha_v2",
            Task::RecaptchaV3 { .. } => "recaptcha_v3",
            Task::Hcaptcha { .. } => "hcaptcha",
            Task::Image { .. } => "image",
        }
    }

    /// Token tasks (reCAPTCHA, hCaptcha) take longer than image tasks.
    pub fn is_token(&self) -> bool {
        !matches!(self, Task::Image { .. })
    }

    /// Refuses a task no provider could solve, naming the field.
    pub fn validate(&self) -> Result<(), CaptchaError> {
        let bad = |m: String| Err(CaptchaError::InvalidTask(m));
        match self {
            Task::RecaptchaV2 { website_url, website_key, .. }
            | Task::RecaptchaV3 { website_url, website_key, .. }
            | Task::Hcaptcha { website_url, website_key } => {
                if !(website_url.starts_with("http://") || website_url.starts_with("https://")) {
                    return bad(format!(
                        "{} website_url {website_url:?} is not an http(s) URL; pass the address of the page the captcha is on",
                        self.kind()
                    ));
                }
                if website_key.trim().is_empty() {
                    return bad(format!(
                        "{} website_key is empty; pass the site key (the page's data-sitekey)",
                        self.kind()
                    ));
                }
                if let Task::RecaptchaV3 { min_score, .. } = self
                    && ![0.3, 0.7, 0.9].contains(min_score)
                {
                    return bad(format!("recaptcha_v3 min_score {min_score} is not one of 0.3, 0.7, 0.9"));
                }
                Ok(())
            }
            Task::Image { body_base64 } => {
                use base64::Engine as _;
                match base64::engine::general_purpose::STANDARD.decode(body_base64) {
                    Ok(bytes) if !bytes.is_empty() => Ok(()),
                    Ok(_) => bad("image body is empty; pass the bytes of the captcha image".into()),
                    Err(e) => bad(format!("image body is not base64 ({e}); pass the image file base64-encoded")),
                }
            }
        }
    }
}

/// A solved task.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Solved {
    /// The token (reCAPTCHA, hCaptcha) or the text (image).
    pub answer: String,
    /// The user agent the token is bound to, when the provider says.
    pub user_agent: Option<String>,
    /// What it cost, in USD.
    pub cost: f64,
    /// The provider's task id.
    pub task_id: u64,
}

/// A CAPTCHA-solving service.
pub trait CaptchaSolver: Send + Sync {
    /// The provider's name for messages (`anti-captcha`).
    fn name(&self) -> &str;

    /// Solves `task`, waiting until the provider has an answer.
    fn solve<'a>(&'a self, task: &'a Task) -> BoxFuture<'a, Result<Solved, CaptchaError>>;

    /// The account's balance, in USD.
    fn balance(&self) -> BoxFuture<'_, Result<f64, CaptchaError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_are_validated_naming_the_field() {
        let v2 = |url: &str, key: &str| Task::RecaptchaV2 {
            website_url: url.into(),
            website_key: key.into(),
            invisible: false,
        };
        assert!(v2("https://a/", "k").validate().is_ok());
        let e = v2("a.example", "k").validate().expect_err("no scheme").to_string();
        assert!(e.contains("website_url \"a.example\""), "{e}");
        let e = v2("https://a/", " ").validate().expect_err("no key").to_string();
        assert!(e.contains("website_key is empty"), "{e}");
        let v3 = Task::RecaptchaV3 {
            website_url: "https://a/".into(),
            website_key: "k".into(),
            min_score: 0.5,
            page_action: None,
        };
        assert!(v3.validate().expect_err("score").to_string().contains("0.3, 0.7, 0.9"));
        let e = Task::Image { body_base64: "%%%".into() }.validate().expect_err("not base64").to_string();
        assert!(e.contains("not base64"), "{e}");
    }
}
