//! Why a solve failed, as a typed error: the provider's documented error
//! codes that a user can act on get their own variant with the fix in the
//! message; the rest keep the provider's code and description.

/// A failed solve or balance request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CaptchaError {
    /// The task is malformed (no provider could solve it).
    #[error("invalid captcha task: {0}")]
    InvalidTask(String),
    /// `ERROR_KEY_DOES_NOT_EXIST`: the client key is wrong.
    #[error(
        "{provider} does not know the client key (ERROR_KEY_DOES_NOT_EXIST); check the secret named by captcha.key_secret (`dc-host secrets set NAME`)"
    )]
    KeyDoesNotExist {
        /// The provider.
        provider: String,
    },
    /// `ERROR_ZERO_BALANCE`: the account has no funds.
    #[error("the {provider} account has no funds (ERROR_ZERO_BALANCE); top it up to solve captchas")]
    ZeroBalance {
        /// The provider.
        provider: String,
    },
    /// `ERROR_NO_SLOT_AVAILABLE` on every attempt: no worker took the task.
    #[error(
        "{provider} had no worker available after {attempts} attempts (ERROR_NO_SLOT_AVAILABLE); raise the maximum bid in the account's API settings or try again later"
    )]
    NoSlotAvailable {
        /// The provider.
        provider: String,
        /// createTask attempts made.
        attempts: u32,
    },
    /// `ERROR_CAPTCHA_UNSOLVABLE`: the workers could not solve it (it is charged).
    #[error("{provider} could not solve the captcha (ERROR_CAPTCHA_UNSOLVABLE: {description})")]
    Unsolvable {
        /// The provider.
        provider: String,
        /// The provider's description.
        description: String,
    },
    /// Any other error code the provider answered with.
    #[error("{provider} refused the request: {code}: {description}")]
    Service {
        /// The provider.
        provider: String,
        /// `errorCode`, e.g. `ERROR_RECAPTCHA_INVALID_SITEKEY`.
        code: String,
        /// `errorDescription`.
        description: String,
    },
    /// The task was not ready in time.
    #[error("{provider} task {task_id} was not ready after {polls} polls ({waited_secs} s of waiting); giving up")]
    Timeout {
        /// The provider.
        provider: String,
        /// The task.
        task_id: u64,
        /// Polls made.
        polls: u32,
        /// Seconds waited.
        waited_secs: u64,
    },
    /// The run's captcha budget is spent.
    #[error(
        "captcha budget exhausted: this run spent ${spent:.6} of its captcha.max_cost_per_run ${max:.6}, so no further captcha is solved in this run; raise captcha.max_cost_per_run to allow more"
    )]
    BudgetExhausted {
        /// USD spent by the run.
        spent: f64,
        /// The budget.
        max: f64,
    },
    /// The provider could not be reached or answered with an HTTP error.
    #[error("cannot reach {provider} at {url}: {detail}")]
    Transport {
        /// The provider.
        provider: String,
        /// The endpoint.
        url: String,
        /// What went wrong.
        detail: String,
    },
    /// The provider answered something its documentation does not describe.
    #[error("unexpected answer from {provider} {method}: {detail}")]
    Protocol {
        /// The provider.
        provider: String,
        /// The API method.
        method: String,
        /// What was wrong.
        detail: String,
    },
}

impl CaptchaError {
    /// The provider's error as a typed error.
    pub fn from_code(provider: &str, code: &str, description: &str) -> CaptchaError {
        let provider = provider.to_string();
        match code {
            "ERROR_KEY_DOES_NOT_EXIST" => CaptchaError::KeyDoesNotExist { provider },
            "ERROR_ZERO_BALANCE" => CaptchaError::ZeroBalance { provider },
            "ERROR_NO_SLOT_AVAILABLE" => CaptchaError::NoSlotAvailable { provider, attempts: 1 },
            "ERROR_CAPTCHA_UNSOLVABLE" => CaptchaError::Unsolvable { provider, description: description.into() },
            _ => CaptchaError::Service { provider, code: code.into(), description: description.into() },
        }
    }

    /// Whether trying the same request again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, CaptchaError::NoSlotAvailable { .. } | CaptchaError::Transport { .. })
    }
}
