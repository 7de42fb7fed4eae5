//! `GET /metrics` (viewer role): Prometheus metrics in the OpenMetrics text
//! format. The counters of the serve loop this API runs in
//! (`dc_orchestrator::metrics`) are registered in the same registry; the
//! gauges here are read from the database at each scrape: apps by state,
//! commands waiting for a host, runs running, hosts by state.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use dc_core::enums::CmdFlag;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::{ApiError, ApiState};

type Labels = Vec<(String, String)>;

/// The gauges read at scrape time, registered in a [`Registry`].
#[derive(Debug, Clone)]
pub struct Gauges {
    apps: Family<Labels, Gauge>,
    pending: Gauge,
    running: Gauge,
    hosts: Family<Labels, Gauge>,
}

impl Gauges {
    /// Registers the gauges (prefix `dc_`) in `registry`.
    pub fn register(registry: &mut Registry) -> Gauges {
        let g = Gauges {
            apps: Family::default(),
            pending: Gauge::default(),
            running: Gauge::default(),
            hosts: Family::default(),
        };
        registry.register("dc_apps", "Registered apps by state (enabled, disabled, auto_disabled)", g.apps.clone());
        registry.register("dc_commands_pending", "Operator commands waiting for a serving host", g.pending.clone());
        registry.register("dc_apps_running", "Apps whose last run is still running", g.running.clone());
        registry.register("dc_hosts", "Hosts on this database by heartbeat state", g.hosts.clone());
        g
    }
}

/// What `/metrics` encodes.
#[derive(Clone)]
pub struct Metrics {
    /// Every metric of this process.
    pub registry: Arc<Registry>,
    /// The gauges in it that are read from the database.
    pub gauges: Gauges,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

pub(crate) async fn scrape(State(state): State<ApiState>) -> Result<axum::response::Response, ApiError> {
    let Some(m) = state.metrics() else {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "not_found",
            "this API serves no metrics (they come with `dc-host serve`)",
        ));
    };
    let db = state.db();
    let apps = dc_core::apps::list_apps(db).await?;
    let count = |f: &dyn Fn(&dc_core::apps::AppRow) -> bool| apps.iter().filter(|a| f(a)).count() as i64;
    let auto = count(&|a| !a.enabled && a.fatal_flag != dc_core::enums::FatalFlag::None.as_str());
    for (state, n) in
        [("enabled", count(&|a| a.enabled)), ("disabled", count(&|a| !a.enabled) - auto), ("auto_disabled", auto)]
    {
        m.gauges.apps.get_or_create(&vec![("state".into(), state.into())]).set(n);
    }
    m.gauges.pending.set(count(&|a| a.cmd_flag == CmdFlag::Pending.as_str()));
    m.gauges.running.set(count(&|a| a.run_status.as_deref() == Some(dc_core::enums::RunStatus::Running.as_str())));
    m.gauges.hosts.clear();
    for h in dc_core::hosts::list(db).await? {
        m.gauges.hosts.get_or_create(&vec![("state".into(), h.state.to_lowercase())]).inc();
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &m.registry)
        .map_err(|e| ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("{e}")))?;
    Ok(([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response())
}
