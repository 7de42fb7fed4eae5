//! The host side of `HostCallbacks::call` (interface 1.3): named JSON methods
//! a plugin calls (`dc_plugin_api::host_call`), checked against its manifest
//! (the method must be known and its capability required) and dispatched to
//! what answers them. Today that is `captcha.*`, answered by a solver built
//! from the `[captcha]` settings the first time a run asks (so a run that
//! solves nothing never opens the secrets store), with the run's cost budget.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use dc_captcha::{AntiCaptcha, Budgeted, CaptchaSolver, Polling};
use dc_core::Settings;
use dc_core::settings::CaptchaProvider;
use dc_plugin_api::host_call::{
    self, CAPTCHA_BALANCE, CAPTCHA_SOLVE, METRICS_GET, PROXY_CURRENT, PROXY_REPORT, PROXY_ROTATE,
};
use dc_plugin_api::{CaptchaBalance, CaptchaSolution, CaptchaTask, Manifest, ProxyExit, ProxyReport, ProxyVerdict};
use tokio::runtime::Handle;

type Solver = Budgeted<AntiCaptcha>;

/// What of a run the host methods read: its request metrics and its proxies.
#[derive(Clone, Copy)]
pub struct RunState<'a> {
    /// The run's request metrics (`metrics.get`).
    pub metrics: &'a dc_net::RequestMetrics,
    /// The run's proxies, when the app uses proxies (`proxy.*`).
    pub proxies: Option<&'a dc_proxy::ProxyManager>,
}

/// The host methods of one run.
pub struct HostCalls {
    settings: Settings,
    solver: OnceLock<Result<Arc<Solver>, String>>,
}

impl HostCalls {
    /// The host methods a run on a host with these settings answers.
    pub fn new(settings: &Settings) -> HostCalls {
        HostCalls { settings: settings.clone(), solver: OnceLock::new() }
    }

    /// Answers `method` with `request_json` for a plugin with `manifest`, or
    /// says why not. `proxies` are the run's, when the app uses proxies.
    pub fn dispatch(
        &self,
        rt: &Handle,
        manifest: &Manifest,
        run: RunState<'_>,
        method: &str,
        request_json: &str,
    ) -> Result<String, String> {
        host_call::check_call(method, &manifest.requires)?;
        let metrics = run.metrics;
        match method {
            PROXY_CURRENT | PROXY_ROTATE | PROXY_REPORT => {
                let Some(proxies) = run.proxies else {
                    return Err(format!(
                        "{method}: this run has no proxies; name the app {}/{}/{} in the host's proxy.apps (with proxy.urls, proxy.file or a BrightData provider)",
                        manifest.group, manifest.parent, manifest.name
                    ));
                };
                let stats = match method {
                    PROXY_CURRENT => proxies.current(),
                    PROXY_ROTATE => proxies.rotate(),
                    _ => {
                        let report: ProxyReport = serde_json::from_str(request_json)
                            .map_err(|e| format!("invalid proxy.report request: {e}"))?;
                        let verdict = match report.verdict {
                            ProxyVerdict::Ban => dc_proxy::health::Verdict::Ban,
                            ProxyVerdict::Failure => dc_proxy::health::Verdict::Failure,
                            _ => dc_proxy::health::Verdict::Good,
                        };
                        proxies.report_current(verdict)
                    }
                }
                .map_err(|e| format!("{method}: {e}"))?;
                let mut exit = ProxyExit::default();
                exit.proxy = stats.proxy;
                exit.exit_ip = stats.exit_ip;
                exit.score = stats.score;
                exit.retired = stats.retired;
                exit.requests = stats.requests;
                exit.bans = stats.bans;
                tracing::debug!(method, proxy = %exit.proxy, score = exit.score, "proxy host call");
                serde_json::to_string(&exit).map_err(|e| e.to_string())
            }
            METRICS_GET => serde_json::to_string(&metrics.snapshot()).map_err(|e| e.to_string()),
            CAPTCHA_SOLVE => {
                let task: CaptchaTask =
                    serde_json::from_str(request_json).map_err(|e| format!("invalid captcha.solve request: {e}"))?;
                let task = to_task(task)?;
                let solver = self.solver()?;
                let solved = rt.block_on(solver.solve_within(&task)).map_err(|e| e.to_string())?;
                let mut answer = CaptchaSolution::default();
                answer.answer = solved.answer;
                answer.user_agent = solved.user_agent;
                answer.cost = solved.cost;
                answer.run_cost = solver.spent();
                tracing::info!(kind = task.kind(), cost = answer.cost, run_cost = answer.run_cost, "captcha solved");
                serde_json::to_string(&answer).map_err(|e| e.to_string())
            }
            CAPTCHA_BALANCE => {
                let solver = self.solver()?;
                let mut answer = CaptchaBalance::default();
                answer.balance = rt.block_on(solver.balance()).map_err(|e| e.to_string())?;
                serde_json::to_string(&answer).map_err(|e| e.to_string())
            }
            other => Err(format!("this host knows the method {other:?} but does not implement it; upgrade dc-host")),
        }
    }

    /// The capabilities this host offers ([`host_capabilities`]).
    pub fn capabilities(&self) -> Vec<&'static str> {
        host_capabilities(&self.settings)
    }

    /// The run's solver, built at the first call.
    fn solver(&self) -> Result<Arc<Solver>, String> {
        self.solver.get_or_init(|| build_solver(&self.settings)).clone()
    }
}

fn build_solver(settings: &Settings) -> Result<Arc<Solver>, String> {
    let c = &settings.captcha;
    let (Some(CaptchaProvider::AntiCaptcha), Some(secret)) = (c.provider, c.key_secret.as_deref()) else {
        return Err(
            "this host offers no captcha solver (capability \"captcha\"); configure [captcha] provider and key_secret in the host's settings"
                .into(),
        );
    };
    let store = dc_core::secrets::open_configured_store(settings)
        .map_err(|e| format!("captcha: cannot open the secrets store for captcha.key_secret {secret:?}: {e}"))?;
    let key = store.get(secret).map_err(|e| {
        format!("captcha: cannot read the client key from the secret {secret:?} ({e}); store it with `dc-host secrets set {secret}`")
    })?;
    let polling = Polling {
        first_wait: Duration::from_millis(c.first_poll_ms),
        interval: Duration::from_millis(c.poll_interval_ms),
        max_interval: Duration::from_millis(c.poll_interval_ms.saturating_mul(5) / 2),
        ..Polling::default()
    };
    let client = AntiCaptcha::new(&c.base_url, &key).map_err(|e| e.to_string())?.with_polling(polling);
    Ok(Arc::new(Budgeted::new(client, c.max_cost_per_run)))
}

fn to_task(task: CaptchaTask) -> Result<dc_captcha::Task, String> {
    Ok(match task {
        CaptchaTask::RecaptchaV2 { website_url, website_key, invisible } => {
            dc_captcha::Task::RecaptchaV2 { website_url, website_key, invisible }
        }
        CaptchaTask::RecaptchaV3 { website_url, website_key, min_score, page_action } => {
            dc_captcha::Task::RecaptchaV3 { website_url, website_key, min_score, page_action }
        }
        CaptchaTask::Hcaptcha { website_url, website_key } => dc_captcha::Task::Hcaptcha { website_url, website_key },
        CaptchaTask::Image { body_base64 } => dc_captcha::Task::Image { body_base64 },
        other => return Err(format!("this host cannot solve {other:?} yet; upgrade dc-host")),
    })
}

/// The capabilities a host with these settings offers: the fixed set
/// ([`crate::HOST_CAPABILITIES`]), `proxy` when `proxy.apps` names any app,
/// and `captcha` when a provider is configured.
pub fn host_capabilities(settings: &Settings) -> Vec<&'static str> {
    let mut caps = crate::HOST_CAPABILITIES.to_vec();
    if !settings.proxy.apps.is_empty() {
        caps.push(dc_plugin_api::capability::PROXY);
    }
    if settings.captcha.provider.is_some() {
        caps.push(dc_plugin_api::capability::CAPTCHA);
    }
    caps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(requires_captcha: bool) -> Manifest {
        let m = Manifest::new("g", "p", "n", "1.0.0");
        if requires_captcha { m.requires(dc_plugin_api::capability::CAPTCHA) } else { m }
    }

    fn state(metrics: &dc_net::RequestMetrics) -> RunState<'_> {
        RunState { metrics, proxies: None }
    }

    #[test]
    fn proxy_calls_without_proxies_say_how_to_configure_them() {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let calls = HostCalls::new(&Settings::default());
        let m = Manifest::new("g", "p", "n", "1.0.0").requires(dc_plugin_api::capability::PROXY);
        let metrics = dc_net::RequestMetrics::new();
        let err = calls.dispatch(rt.handle(), &m, state(&metrics), PROXY_ROTATE, "{}").expect_err("no proxies");
        assert!(err.starts_with("proxy.rotate: this run has no proxies") && err.contains("g/p/n"), "{err}");
        let mut s = Settings::default();
        assert!(!host_capabilities(&s).contains(&"proxy"));
        s.proxy.apps = vec!["*".into()];
        assert!(host_capabilities(&s).contains(&"proxy"));
    }

    const V2: &str = r#"{"kind": "recaptcha_v2", "website_url": "https://a.test/", "website_key": "k"}"#;

    #[test]
    fn calls_are_checked_before_anything_is_solved() {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let calls = HostCalls::new(&Settings::default());
        let err = calls
            .dispatch(rt.handle(), &manifest(false), state(&dc_net::RequestMetrics::new()), CAPTCHA_SOLVE, V2)
            .expect_err("not required");
        assert!(err.contains("does not require"), "{err}");
        let err = calls
            .dispatch(rt.handle(), &manifest(true), state(&dc_net::RequestMetrics::new()), "captcha.crack", V2)
            .expect_err("unknown");
        assert!(err.starts_with("unknown host method \"captcha.crack\""), "{err}");
        let err = calls
            .dispatch(rt.handle(), &manifest(true), state(&dc_net::RequestMetrics::new()), CAPTCHA_SOLVE, "{}")
            .expect_err("no kind");
        assert!(err.starts_with("invalid captcha.solve request"), "{err}");
        let err = calls
            .dispatch(rt.handle(), &manifest(true), state(&dc_net::RequestMetrics::new()), CAPTCHA_SOLVE, V2)
            .expect_err("no solver");
        assert!(err.contains("this host offers no captcha solver") && err.contains("[captcha]"), "{err}");
    }

    #[test]
    fn a_plugin_requiring_metrics_reads_its_run_s_request_metrics() {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let calls = HostCalls::new(&Settings::default());
        let metrics = dc_net::RequestMetrics::new();
        let breakers = dc_net::Breakers::new(dc_net::BreakerPolicy::default(), Arc::new(dc_net::SystemClock));
        drop(dc_net::Exchange::start(&metrics, &breakers, "http://a.test/p", None));
        let plain = Manifest::new("g", "p", "n", "1.0.0");
        let err = calls.dispatch(rt.handle(), &plain, state(&metrics), METRICS_GET, "{}").expect_err("not required");
        assert!(err.contains("\"metrics\"") && err.contains("does not require"), "{err}");
        let m = plain.requires(dc_plugin_api::capability::METRICS);
        let answer = calls.dispatch(rt.handle(), &m, state(&metrics), METRICS_GET, "{}").expect("answered");
        let doc: serde_json::Value = serde_json::from_str(&answer).expect("JSON");
        assert_eq!((doc["version"].as_u64(), doc["requests"].as_u64()), (Some(1), Some(1)), "{doc}");
    }

    #[test]
    fn captcha_is_offered_only_with_a_provider() {
        let mut s = Settings::default();
        assert!(!host_capabilities(&s).contains(&"captcha"));
        s.captcha.provider = Some(CaptchaProvider::AntiCaptcha);
        assert!(host_capabilities(&s).ends_with(&["http", "captcha"]));
    }
}
