-- The bytes of every registered plugin file, by content hash, so a host that
-- never saw a plugin file can run it: registering once serves the fleet. Hosts
-- cache the files in their local plugin store (<data_dir>/store) and check the
-- hash of what they fetch.
CREATE TABLE dc_plugin_files (
    sha256 TEXT PRIMARY KEY,
    bytes BLOB NOT NULL,
    size BIGINT NOT NULL,
    created_at TEXT NOT NULL
);
