-- A counter per plugin table, raised by every write to its rows on SQLite (a
-- merge, a hash upgrade, a migration, a new declaration). A run stages its
-- merges outside SQLite's write lock, diffing against the rows as they were
-- at that generation; under the lock it applies the staged diff only if the
-- generation is still the same, and diffs again otherwise (dc_core::stage).
ALTER TABLE dc_plugin_tables ADD COLUMN generation BIGINT NOT NULL DEFAULT 0;
