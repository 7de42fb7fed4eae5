//! What `dc-host serve` counts for Prometheus (served by the REST API at
//! `/metrics`): runs started by cause, runs ended by status, run durations,
//! rows merged by operation, and the HTTP requests of those runs (summed
//! from each ended run's stored request metrics: answers by status, errors
//! by class, retries, bytes). Counters live in the serving process and
//! start at zero when it starts, as Prometheus counters do; the API adds
//! gauges read from the database at scrape time.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// The serve loop's counters, registered in a [`Registry`].
#[derive(Debug, Clone)]
pub struct ServeMetrics {
    started: Family<Labels, Counter>,
    ended: Family<Labels, Counter>,
    duration: Histogram,
    rows: Family<Labels, Counter>,
    http_requests: Counter,
    http_responses: Family<Labels, Counter>,
    http_errors: Family<Labels, Counter>,
    http_retries: Counter,
    http_bytes: Counter,
}

impl ServeMetrics {
    /// Registers the counters (prefix `dc_`) in `registry`.
    pub fn register(registry: &mut Registry) -> ServeMetrics {
        let m = ServeMetrics {
            started: Family::default(),
            ended: Family::default(),
            // 0.5 s to about 9 hours
            duration: Histogram::new(exponential_buckets(0.5, 4.0, 9)),
            rows: Family::default(),
            http_requests: Counter::default(),
            http_responses: Family::default(),
            http_errors: Family::default(),
            http_retries: Counter::default(),
            http_bytes: Counter::default(),
        };
        registry.register("dc_runs_started", "Runs this host started, by cause (schedule, command)", m.started.clone());
        registry.register("dc_runs_ended", "Runs this host supervised to their end, by status", m.ended.clone());
        registry.register("dc_run_duration_seconds", "Durations of the runs this host supervised", m.duration.clone());
        registry.register(
            "dc_rows_merged",
            "Rows the runs of this host merged, by operation (inserted, updated, deleted, unchanged)",
            m.rows.clone(),
        );
        registry.register("dc_http_requests", "HTTP requests the plugins of ended runs made", m.http_requests.clone());
        registry.register(
            "dc_http_responses",
            "HTTP answers the ended runs received, by status code (every attempt, retried ones too)",
            m.http_responses.clone(),
        );
        registry.register(
            "dc_http_errors",
            "HTTP failures of the ended runs, by class (timeout, connection, circuit_open, body_too_large, body, other)",
            m.http_errors.clone(),
        );
        registry.register("dc_http_retries", "HTTP attempts the ended runs retried", m.http_retries.clone());
        registry.register("dc_http_received_bytes", "HTTP body bytes the ended runs received", m.http_bytes.clone());
        m
    }

    /// Adds an ended run's request metrics.
    pub fn requests(&self, m: &dc_net::MetricsSnapshot) {
        let t = &m.total;
        self.http_requests.inc_by(t.requests);
        for (status, n) in &t.status {
            self.http_responses.get_or_create(&vec![("status".into(), status.to_string())]).inc_by(*n);
        }
        for (class, n) in &t.errors {
            self.http_errors.get_or_create(&vec![("class".into(), class.as_str().into())]).inc_by(*n);
        }
        self.http_retries.inc_by(t.retries);
        self.http_bytes.inc_by(t.bytes_received);
    }

    /// A run was started; `cause` is `schedule` or `command …`.
    pub fn started(&self, cause: &str) {
        let cause = if cause.starts_with("command") { "command" } else { "schedule" };
        self.started.get_or_create(&vec![("cause".into(), cause.into())]).inc();
    }

    /// A run ended with `status`, after `seconds` (when known), with its row counts.
    pub fn ended(&self, status: &str, seconds: Option<f64>, rows: [(&str, i64); 4]) {
        self.ended.get_or_create(&vec![("status".into(), status.into())]).inc();
        if let Some(s) = seconds {
            self.duration.observe(s);
        }
        for (op, n) in rows {
            if n > 0 {
                self.rows.get_or_create(&vec![("op".into(), op.into())]).inc_by(n as u64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_encoded_for_prometheus() {
        let mut registry = Registry::default();
        let m = ServeMetrics::register(&mut registry);
        m.started("command START");
        m.started("schedule");
        m.ended("SUCCESS", Some(2.0), [("inserted", 3), ("updated", 0), ("deleted", 1), ("unchanged", 5)]);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        assert!(text.contains("dc_runs_started_total{cause=\"command\"} 1"), "{text}");
        assert!(text.contains("dc_runs_ended_total{status=\"SUCCESS\"} 1"), "{text}");
        assert!(text.contains("dc_rows_merged_total{op=\"inserted\"} 3"), "{text}");
        assert!(!text.contains("op=\"updated\""), "zero counts are not created: {text}");
        assert!(text.contains("dc_run_duration_seconds_count 1"), "{text}");
    }

    #[test]
    fn ended_runs_request_metrics_add_up() {
        let mut registry = Registry::default();
        let m = ServeMetrics::register(&mut registry);
        let run = dc_net::RequestMetrics::new();
        for status in [503, 200, 404] {
            run.request("h", None);
            run.attempt(
                "h",
                None,
                1,
                dc_net::metrics::AttemptOutcome::Status(status),
                std::time::Duration::from_millis(1),
            );
        }
        run.attempt("h", None, 2, dc_net::metrics::AttemptOutcome::Status(200), std::time::Duration::from_millis(1));
        run.error("h", None, dc_net::ErrorClass::CircuitOpen);
        run.received("h", None, 42);
        m.requests(&run.snapshot());
        m.requests(&run.snapshot());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        assert!(text.contains("dc_http_requests_total 6"), "{text}");
        assert!(text.contains("dc_http_responses_total{status=\"200\"} 4"), "{text}");
        assert!(text.contains("dc_http_responses_total{status=\"503\"} 2"), "{text}");
        assert!(text.contains("dc_http_errors_total{class=\"circuit_open\"} 2"), "{text}");
        assert!(text.contains("dc_http_retries_total 2"), "{text}");
        assert!(text.contains("dc_http_received_bytes_total 84"), "{text}");
    }
}
