-- One row per dc-host that runs `dc-host serve` against this database: its
-- process, when it started, its last heartbeat and its state (SERVING,
-- STOPPING, STOPPED), for `dc-host hosts list` and for noticing a host that
-- died (its heartbeat stops).
CREATE TABLE dc_hosts (
    host_name TEXT PRIMARY KEY,
    pid BIGINT NOT NULL,
    version TEXT NOT NULL,
    state TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL,
    heartbeat_at TIMESTAMPTZ NOT NULL
);
