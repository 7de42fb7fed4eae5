//! What `dc-host serve` counts for Prometheus (served by the REST API at
//! `/metrics`): runs started by cause, runs ended by status, run durations,
//! and rows merged by operation. Counters live in the serving process and
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
        };
        registry.register("dc_runs_started", "Runs this host started, by cause (schedule, command)", m.started.clone());
        registry.register("dc_runs_ended", "Runs this host supervised to their end, by status", m.ended.clone());
        registry.register("dc_run_duration_seconds", "Durations of the runs this host supervised", m.duration.clone());
        registry.register(
            "dc_rows_merged",
            "Rows the runs of this host merged, by operation (inserted, updated, deleted, unchanged)",
            m.rows.clone(),
        );
        m
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
}
