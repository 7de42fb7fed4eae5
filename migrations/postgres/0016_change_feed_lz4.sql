-- A change-feed entry holds up to 1,000 keys (about 18 KB of JSON for short
-- keys), so every entry is compressed as it is written. PostgreSQL's default
-- (pglz) made writing a 300,000-row first load's entries cost 39 ms; lz4
-- 11 ms, at the same size (docs/benchmarks.md, session 25). lz4 needs
-- PostgreSQL 14 built with it (Debian's and the official images are): on a
-- server without it the column keeps the default and this migration still
-- succeeds. Only new values are affected; nothing is rewritten.
DO $$
BEGIN
    EXECUTE 'ALTER TABLE run_changes ALTER COLUMN row_keys SET COMPRESSION lz4';
EXCEPTION WHEN feature_not_supported OR syntax_error OR invalid_parameter_value THEN
    RAISE NOTICE 'run_changes.row_keys keeps the default compression: %', SQLERRM;
END
$$;
