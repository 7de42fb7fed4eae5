-- The change feed keeps up to 1,000 keys of one run, table and operation per
-- entry: `row_keys` is a JSON array of the canonical keys (each itself a JSON
-- array), `key_count` how many it holds. One row and two index entries per
-- changed row cost a first load more than the load itself (dc_core::feed).
-- Entries written before hold one key each.
UPDATE run_changes SET row_key = '[' || row_key || ']';
ALTER TABLE run_changes RENAME COLUMN row_key TO row_keys;
ALTER TABLE run_changes ADD COLUMN key_count INTEGER NOT NULL DEFAULT 1;
-- every reader filters on the run alone
DROP INDEX run_changes_runtime_idx;
CREATE INDEX run_changes_runtime_idx ON run_changes (runtime_id);
