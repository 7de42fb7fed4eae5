-- Host tables added from now on start with dc_ (a prefix no plugin table may use).
-- One row per plugin table: its owner app, the declaration its shape follows
-- (what a new plugin version's declaration is compared with: additive changes
-- are applied, others need `dc-host data migrate`), and the row-hash encoding
-- its _row_hash values were made with (dc_core::hash::HashVersion). A table
-- without a row here predates this migration: it was hashed with version 1,
-- and the first merge into it recomputes its hashes with the current version
-- in the merge's transaction, so the upgrade reports no row as changed.
CREATE TABLE dc_plugin_tables (
    table_name TEXT PRIMARY KEY,
    app_id TEXT NOT NULL,
    hash_version BIGINT NOT NULL,
    declaration TEXT NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
