-- What an operator sets per app (`dc-host apps schedule` / `apps args`):
-- the schedule's time zone (IANA name; NULL = UTC), the anchor interval
-- schedules count from (next = anchor + k * interval, so runs never drift),
-- who set the schedule ('manifest': the plugin's default, replaced when a new
-- version brings another; 'operator': kept across versions, also when off),
-- and the runtime arguments scheduled and commanded runs use (JSON, checked
-- against the plugin's args_schema when stored and when a version becomes active).
ALTER TABLE apps ADD COLUMN schedule_tz TEXT;
ALTER TABLE apps ADD COLUMN schedule_anchor TIMESTAMPTZ;
ALTER TABLE apps ADD COLUMN schedule_origin TEXT NOT NULL DEFAULT 'manifest';
ALTER TABLE apps ADD COLUMN run_args TEXT;
