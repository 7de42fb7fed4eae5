-- The crawl frontier of a run, persisted as the run goes (the worker's
-- journal), so a run that was stopped, failed or killed can be resumed with
-- `dc-host run APP --resume RUNTIME_ID`. One row per work item, numbered in
-- the order the run added it (seq). key_hash is the item's deduplication
-- key (its first 16 bytes of SHA-256, hex). state is 'pending', 'done' or
-- 'failed'; a done item keeps the records its `collect` returned (a JSON
-- array) so the resumed run can store them without collecting the item again.
-- A successful run deletes its items when it commits; a resumed run takes
-- over the items of the run it resumes (their runtime_id moves to it).
CREATE TABLE dc_run_items (
    runtime_id TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    key_hash   TEXT NOT NULL,
    item       TEXT NOT NULL,
    depth      INTEGER NOT NULL,
    state      TEXT NOT NULL,
    records    TEXT,
    PRIMARY KEY (runtime_id, seq)
);

-- The run this run resumes; a run is resumed at most once.
ALTER TABLE runtime ADD COLUMN resumed_from TEXT;
CREATE UNIQUE INDEX runtime_resumed_from_idx ON runtime (resumed_from);
