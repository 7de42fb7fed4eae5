-- The request metrics of each run (dc-net's versioned JSON snapshot: requests,
-- attempts, retries, answers by status, errors by class, bytes, latency
-- percentiles; per domain and per proxy). The worker writes it while the run
-- goes and last at its end; `generation` only grows, so a late periodic write
-- never replaces a newer snapshot. Deleted with its run by retention.
CREATE TABLE dc_run_metrics (
    runtime_id TEXT PRIMARY KEY,
    generation BIGINT NOT NULL,
    metrics TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
