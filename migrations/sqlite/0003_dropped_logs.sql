-- Log records of a run that were dropped because the worker's log buffer was
-- full (logging.buffer), so `dc-host runs show` can say how many are missing.
ALTER TABLE runtime ADD COLUMN dropped_logs BIGINT NOT NULL DEFAULT 0;
