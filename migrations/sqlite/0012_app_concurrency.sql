-- How many runs of an app may go on at once (`dc-host apps concurrency`);
-- 1, the default, means an app never runs twice at once. `serve` also caps
-- the runs of one host (`runs.max_runs_per_host`).
ALTER TABLE apps ADD COLUMN max_concurrent_runs INTEGER NOT NULL DEFAULT 1;
