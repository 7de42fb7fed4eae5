-- Proxy exits reserved by runs (dc-proxy): a run reserves each exit it will
-- use (its exit IP learned through a proxy judge, else the proxy endpoint)
-- with one INSERT; the unique partial index lets at most one ACTIVE
-- reservation hold an exit, so two runs never share one. A reservation ends
-- (released_at, release_reason) when its run ends, when the reaper ends an
-- orphaned run, or when it expires (expires_at, after which the next
-- reservation of that exit releases it first).
CREATE TABLE dc_proxy_reservations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    exit_key TEXT NOT NULL,
    proxy TEXT NOT NULL,
    runtime_id TEXT NOT NULL,
    host_name TEXT NOT NULL,
    reserved_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    released_at TEXT,
    release_reason TEXT
);
CREATE UNIQUE INDEX dc_proxy_reservations_active ON dc_proxy_reservations (exit_key) WHERE released_at IS NULL;
CREATE INDEX dc_proxy_reservations_run ON dc_proxy_reservations (runtime_id);
