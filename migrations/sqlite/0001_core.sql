-- Core tables of dc-host (SQLite). Timestamps are RFC 3339 text; booleans are 0/1.
CREATE TABLE app_groups (
    group_name  TEXT PRIMARY KEY,
    created_at  TEXT NOT NULL
);

CREATE TABLE app_parents (
    group_name  TEXT NOT NULL REFERENCES app_groups(group_name),
    parent_name TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (group_name, parent_name)
);

CREATE TABLE apps (
    app_id         TEXT PRIMARY KEY,
    group_name     TEXT NOT NULL,
    parent_name    TEXT NOT NULL,
    app_name       TEXT NOT NULL,
    kind           TEXT NOT NULL DEFAULT 'scraper',
    description    TEXT NOT NULL DEFAULT '',
    enabled        INTEGER NOT NULL DEFAULT 1,
    schedule_cron  TEXT,
    interval_secs  INTEGER,
    next_run       TEXT,
    last_run       TEXT,
    run_status     TEXT,
    cmd_name       TEXT,
    cmd_flag       TEXT NOT NULL DEFAULT 'IDLE',
    fatal_flag     TEXT NOT NULL DEFAULT 'NONE',
    fatal_msg      TEXT,
    fail_count     INTEGER NOT NULL DEFAULT 0,
    current_count  INTEGER NOT NULL DEFAULT 0,
    total_count    INTEGER NOT NULL DEFAULT 0,
    error_count    INTEGER NOT NULL DEFAULT 0,
    active_version TEXT,
    active_hash    TEXT,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL,
    UNIQUE (group_name, parent_name, app_name),
    FOREIGN KEY (group_name, parent_name) REFERENCES app_parents(group_name, parent_name)
);

CREATE TABLE plugin_versions (
    app_id            TEXT NOT NULL REFERENCES apps(app_id),
    version           TEXT NOT NULL,
    sha256            TEXT NOT NULL,
    interface_version INTEGER NOT NULL,
    manifest          TEXT NOT NULL,
    store_path        TEXT NOT NULL,
    source_file       TEXT NOT NULL,
    registered_at     TEXT NOT NULL,
    PRIMARY KEY (app_id, version)
);

CREATE TABLE app_db_objects (
    app_id       TEXT NOT NULL,
    object_name  TEXT NOT NULL,
    object_type  TEXT NOT NULL,
    last_action  TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    PRIMARY KEY (app_id, object_name, object_type)
);

CREATE TABLE runtime (
    runtime_id     TEXT PRIMARY KEY,
    app_id         TEXT NOT NULL REFERENCES apps(app_id),
    plugin_version TEXT NOT NULL,
    plugin_hash    TEXT NOT NULL,
    status         TEXT NOT NULL,
    args           TEXT NOT NULL,
    threads        INTEGER NOT NULL,
    created_at     TEXT NOT NULL,
    started_at     TEXT,
    ended_at       TEXT,
    exit_code      INTEGER,
    exit_signal    INTEGER,
    reason         TEXT,
    worker_pid     INTEGER,
    host_name      TEXT NOT NULL DEFAULT '',
    stop_requested INTEGER NOT NULL DEFAULT 0,
    current_count  INTEGER NOT NULL DEFAULT 0,
    total_count    INTEGER NOT NULL DEFAULT 0,
    error_count    INTEGER NOT NULL DEFAULT 0,
    inserted       INTEGER NOT NULL DEFAULT 0,
    updated        INTEGER NOT NULL DEFAULT 0,
    deleted        INTEGER NOT NULL DEFAULT 0,
    unchanged      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX runtime_app_idx ON runtime (app_id, created_at);

CREATE TABLE run_changes (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    runtime_id  TEXT NOT NULL,
    table_name  TEXT NOT NULL,
    op          TEXT NOT NULL,
    row_key     TEXT NOT NULL
);
CREATE INDEX run_changes_runtime_idx ON run_changes (runtime_id, table_name, op);

CREATE TABLE logs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    ts          TEXT NOT NULL,
    level       TEXT NOT NULL,
    target      TEXT NOT NULL,
    message     TEXT NOT NULL,
    app_id      TEXT,
    runtime_id  TEXT,
    context     TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX logs_runtime_idx ON logs (runtime_id, id);

CREATE TABLE app_functions (
    function_hash TEXT PRIMARY KEY,
    app_id        TEXT,
    function_name TEXT NOT NULL,
    module_path   TEXT NOT NULL,
    created_at    TEXT NOT NULL
);

CREATE TABLE function_log (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    function_hash TEXT NOT NULL REFERENCES app_functions(function_hash),
    runtime_id    TEXT,
    thread_name   TEXT NOT NULL,
    started_at    TEXT NOT NULL,
    elapsed_ms    REAL NOT NULL,
    rows_count    INTEGER NOT NULL DEFAULT 0,
    is_error      INTEGER NOT NULL DEFAULT 0,
    error_msg     TEXT
);
