//! Since 1.3: the registry of named host methods that cross through
//! [`crate::abi::HostCallbacks::call`], and the JSON documents of each.
//!
//! A method name is `<capability>.<verb>`: the part before the first dot is the
//! capability ([`crate::capability`]) the plugin's manifest must `require` for
//! the host to answer. New capabilities (proxies, request metrics, documents)
//! are new names and new `#[non_exhaustive]` JSON types here — never a layout
//! change. A name is never reused or removed.
//!
//! | method | request | answer |
//! |---|---|---|
//! | `captcha.solve` | [`CaptchaTask`] | [`CaptchaSolution`] |
//! | `captcha.balance` | `{}` | [`CaptchaBalance`] |
//! | `metrics.get` | `{}` | the run's request metrics so far: the document `dc-host runs show ID --metrics --json` prints (`version`, `requests`, `attempts`, `retries`, `status`, `errors`, `bytes_received`, `latency`, `domains`, `proxies`) |
//! | `proxy.current` (1.4) | `{}` | [`ProxyExit`]: the run's proxy the calling thread uses |
//! | `proxy.rotate` (1.4) | `{}` | [`ProxyExit`]: the calling thread moved to the next usable proxy |
//! | `proxy.report` (1.4) | [`ProxyReport`] | [`ProxyExit`]: after the verdict on the thread's proxy (a ban lowers its health score and moves the thread on) |

use serde::{Deserialize, Serialize};

/// Solve a CAPTCHA with the host's configured solver (capability `captcha`).
pub const CAPTCHA_SOLVE: &str = "captcha.solve";
/// The solver account's balance (capability `captcha`).
pub const CAPTCHA_BALANCE: &str = "captcha.balance";

/// The run's request metrics so far (capability `metrics`).
pub const METRICS_GET: &str = "metrics.get";

/// Since 1.4: the run's proxy the calling thread uses (capability `proxy`).
pub const PROXY_CURRENT: &str = "proxy.current";
/// Since 1.4: moves the calling thread to the run's next usable proxy (capability `proxy`).
pub const PROXY_ROTATE: &str = "proxy.rotate";
/// Since 1.4: reports the calling thread's proxy as banned, failing or good
/// (capability `proxy`).
pub const PROXY_REPORT: &str = "proxy.report";

/// Every host method this interface version defines.
pub const KNOWN: &[&str] = &[CAPTCHA_SOLVE, CAPTCHA_BALANCE, METRICS_GET, PROXY_CURRENT, PROXY_ROTATE, PROXY_REPORT];

/// Whether `method` is a host method this interface version defines.
pub fn is_known(method: &str) -> bool {
    KNOWN.contains(&method)
}

/// The capability a method belongs to: the part of its name before the first
/// dot (`captcha.solve` → `captcha`), or `None` for a name without one.
pub fn capability_of(method: &str) -> Option<&str> {
    method.split_once('.').map(|(cap, _)| cap).filter(|c| !c.is_empty())
}

/// The checks every host makes before it answers `method` for a plugin whose
/// manifest requires `requires`: the method must be one this interface
/// defines, and its capability must be required. Returns the capability, or
/// the refusal naming the method and what to do.
pub fn check_call<'m>(method: &'m str, requires: &[String]) -> Result<&'m str, String> {
    let Some(capability) = capability_of(method).filter(|_| is_known(method)) else {
        return Err(format!(
            "unknown host method {method:?} (this host knows {}); check the name, or upgrade dc-host if the method is newer",
            KNOWN.join(", ")
        ));
    };
    if !requires.iter().any(|r| r == capability) {
        return Err(format!(
            "the host method {method:?} belongs to the capability {capability:?}, which the plugin's manifest does not require; add .requires({capability:?}) to the manifest and rebuild the plugin"
        ));
    }
    Ok(capability)
}

/// The request of `captcha.solve`: what to solve. It crosses as JSON with a
/// `kind` tag, e.g. `{"kind": "recaptcha_v2", "website_url": "...",
/// "website_key": "..."}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum CaptchaTask {
    /// Google reCAPTCHA v2 (checkbox or invisible), solved without a proxy.
    RecaptchaV2 {
        /// The page the CAPTCHA is on.
        website_url: String,
        /// The site key (`data-sitekey`).
        website_key: String,
        /// The invisible variant.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        invisible: bool,
    },
    /// Google reCAPTCHA v3, solved without a proxy.
    RecaptchaV3 {
        /// The page the CAPTCHA is on.
        website_url: String,
        /// The site key.
        website_key: String,
        /// The score the token must reach: 0.3, 0.7 or 0.9.
        min_score: f64,
        /// The action the page passes to `grecaptcha.execute` (none: the default).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        page_action: Option<String>,
    },
    /// hCaptcha, solved without a proxy.
    Hcaptcha {
        /// The page the CAPTCHA is on.
        website_url: String,
        /// The site key.
        website_key: String,
    },
    /// Text in an image.
    Image {
        /// The image file (PNG, JPEG, GIF), base64-encoded without line breaks
        /// or a `data:` prefix.
        body_base64: String,
    },
}

impl CaptchaTask {
    /// A reCAPTCHA v2 task.
    pub fn recaptcha_v2(website_key: impl Into<String>, website_url: impl Into<String>) -> CaptchaTask {
        CaptchaTask::RecaptchaV2 { website_url: website_url.into(), website_key: website_key.into(), invisible: false }
    }

    /// A reCAPTCHA v3 task.
    pub fn recaptcha_v3(
        website_key: impl Into<String>,
        website_url: impl Into<String>,
        min_score: f64,
        page_action: Option<String>,
    ) -> CaptchaTask {
        CaptchaTask::RecaptchaV3 {
            website_url: website_url.into(),
            website_key: website_key.into(),
            min_score,
            page_action,
        }
    }

    /// An hCaptcha task.
    pub fn hcaptcha(website_key: impl Into<String>, website_url: impl Into<String>) -> CaptchaTask {
        CaptchaTask::Hcaptcha { website_url: website_url.into(), website_key: website_key.into() }
    }

    /// An image task from the base64 of the image file.
    pub fn image_base64(body_base64: impl Into<String>) -> CaptchaTask {
        CaptchaTask::Image { body_base64: body_base64.into() }
    }
}

/// The answer of `captcha.solve`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CaptchaSolution {
    /// The token to submit (reCAPTCHA, hCaptcha) or the text read (image).
    #[serde(default)]
    pub answer: String,
    /// The user agent the token is bound to, when the solver reports one
    /// (hCaptcha): send requests that use the token with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// What this solve cost, in USD.
    #[serde(default)]
    pub cost: f64,
    /// What this run's solves cost so far, in USD (this one included).
    #[serde(default)]
    pub run_cost: f64,
}

/// The answer of `captcha.balance`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CaptchaBalance {
    /// The solver account's balance, in USD.
    #[serde(default)]
    pub balance: f64,
}

/// Since 1.4: the answer of the `proxy.*` methods — one of the run's proxies,
/// as the request metrics name it (never with its password).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ProxyExit {
    /// The proxy URL, its password redacted (`http://user:<redacted>@host:port`).
    #[serde(default)]
    pub proxy: String,
    /// The exit IP a proxy judge saw, when judges are configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_ip: Option<String>,
    /// Its health score (1.0 healthy; retired below the host's `proxy.retire_below`).
    #[serde(default)]
    pub score: f64,
    /// Retired for the rest of the run.
    #[serde(default)]
    pub retired: bool,
    /// Requests through it so far.
    #[serde(default)]
    pub requests: u64,
    /// Bans seen through it so far (reported ones included).
    #[serde(default)]
    pub bans: u64,
}

/// Since 1.4: what a plugin says about its thread's proxy (`proxy.report`):
/// `{"verdict": "ban"}`, `"failure"` or `"good"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ProxyReport {
    /// The verdict.
    pub verdict: ProxyVerdict,
}

impl ProxyReport {
    /// A report with this verdict.
    pub fn new(verdict: ProxyVerdict) -> ProxyReport {
        ProxyReport { verdict }
    }
}

/// Since 1.4: a plugin's verdict on a proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProxyVerdict {
    /// The site banned this exit (a block page the host could not see as one).
    Ban,
    /// It failed (no answer, a broken answer).
    Failure,
    /// It worked.
    Good,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_belong_to_known_capabilities() {
        for m in KNOWN {
            let cap = capability_of(m).expect("namespaced");
            assert!(crate::capability::is_known(cap), "{m}");
        }
        assert_eq!(capability_of("captcha.solve"), Some("captcha"));
        assert_eq!(capability_of("solve"), None);
        assert_eq!(capability_of(".solve"), None);
    }

    #[test]
    fn calls_are_checked_by_name_and_requirement() {
        let req = vec!["fetch".to_string(), "captcha".to_string()];
        assert_eq!(check_call("captcha.solve", &req), Ok("captcha"));
        let err = check_call("captcha.solve", &["fetch".to_string()]).expect_err("not required");
        assert!(err.contains("\"captcha.solve\"") && err.contains(".requires(\"captcha\")"), "{err}");
        let err = check_call("captcha.solv", &req).expect_err("unknown");
        assert!(err.starts_with("unknown host method \"captcha.solv\"") && err.contains("captcha.solve"), "{err}");
    }

    #[test]
    fn proxy_reports_are_checked() {
        let r: ProxyReport = serde_json::from_str(r#"{"verdict": "ban"}"#).expect("parses");
        assert_eq!(r, ProxyReport::new(ProxyVerdict::Ban));
        let err = serde_json::from_str::<ProxyReport>(r#"{"verdict": "meh"}"#).expect_err("unknown verdict");
        assert!(err.to_string().contains("meh"), "{err}");
        assert_eq!(check_call(PROXY_ROTATE, &["proxy".to_string()]), Ok("proxy"));
    }

    #[test]
    fn tasks_cross_as_tagged_json() {
        let t = CaptchaTask::recaptcha_v2("k", "https://x/");
        let j = serde_json::to_value(&t).expect("json");
        assert_eq!(j, serde_json::json!({"kind": "recaptcha_v2", "website_url": "https://x/", "website_key": "k"}));
        assert_eq!(serde_json::from_value::<CaptchaTask>(j).expect("parses"), t);
        let err = serde_json::from_str::<CaptchaTask>(r#"{"kind": "funcaptcha"}"#).expect_err("unknown kind");
        assert!(err.to_string().contains("funcaptcha"), "{err}");
        let err = serde_json::from_str::<CaptchaTask>(r#"{"kind": "hcaptcha", "website_url": "u"}"#)
            .expect_err("missing key");
        assert!(err.to_string().contains("website_key"), "{err}");
    }
}
