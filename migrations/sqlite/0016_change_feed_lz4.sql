-- PostgreSQL's migration 16 compresses change-feed entries with lz4. SQLite
-- stores them as they are: nothing to change here. The file keeps both
-- backends' schema versions the same.
SELECT 1;
