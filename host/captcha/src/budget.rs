//! A per-run cost budget around any solver: the cost of every solved task is
//! added up, and once the total reaches the budget no further solve starts
//! (a clear [`CaptchaError::BudgetExhausted`]). Solves already running on
//! other threads when the budget is reached still finish, so a run can end a
//! few solves' cost above its budget, never more than one per thread.

use std::sync::Mutex;

use crate::error::CaptchaError;
use crate::{BoxFuture, CaptchaSolver, Solved, Task};

/// A solver with a cost budget (one per run).
pub struct Budgeted<S> {
    inner: S,
    max_cost: Option<f64>,
    spent: Mutex<f64>,
}

impl<S: CaptchaSolver> Budgeted<S> {
    /// `inner` limited to `max_cost` USD in total (`None`: no limit).
    pub fn new(inner: S, max_cost: Option<f64>) -> Budgeted<S> {
        Budgeted { inner, max_cost, spent: Mutex::new(0.0) }
    }

    /// USD spent so far.
    pub fn spent(&self) -> f64 {
        *self.spent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Solves `task` unless the budget is spent, then counts its cost.
    pub async fn solve_within(&self, task: &Task) -> Result<Solved, CaptchaError> {
        if let Some(max) = self.max_cost {
            let spent = self.spent();
            if spent >= max {
                return Err(CaptchaError::BudgetExhausted { spent, max });
            }
        }
        let solved = self.inner.solve(task).await?;
        *self.spent.lock().unwrap_or_else(|p| p.into_inner()) += solved.cost;
        Ok(solved)
    }
}

impl<S: CaptchaSolver> CaptchaSolver for Budgeted<S> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn solve<'a>(&'a self, task: &'a Task) -> BoxFuture<'a, Result<Solved, CaptchaError>> {
        Box::pin(self.solve_within(task))
    }

    fn balance(&self) -> BoxFuture<'_, Result<f64, CaptchaError>> {
        self.inner.balance()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::AntiCaptcha;
    use crate::fake::{FakeAntiCaptcha, Script};
    use crate::sleep::RecordingSleeper;

    #[tokio::test]
    async fn solves_stop_once_the_budget_is_spent() {
        let fake = FakeAntiCaptcha::start(Script::new("k").processing_polls(0).cost("0.001500")).await;
        let client =
            AntiCaptcha::new(&fake.base_url, "k").expect("client").with_sleeper(Arc::new(RecordingSleeper::default()));
        let b = Budgeted::new(client, Some(0.002));
        let task = Task::Image { body_base64: "aGVsbG8=".into() };
        b.solve_within(&task).await.expect("first: 0.0015 of 0.002");
        b.solve_within(&task).await.expect("second starts under the budget: 0.003 of 0.002");
        let e = b.solve_within(&task).await.expect_err("third is refused");
        assert!(matches!(e, CaptchaError::BudgetExhausted { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "captcha budget exhausted: this run spent $0.003000 of its captcha.max_cost_per_run $0.002000, so no further captcha is solved in this run; raise captcha.max_cost_per_run to allow more"
        );
        let creates = fake.requests().iter().filter(|(p, _)| p == "/createTask").count();
        assert_eq!(creates, 2, "the refused solve never reached the service");
        assert!((b.spent() - 0.003).abs() < 1e-12);
    }
}
