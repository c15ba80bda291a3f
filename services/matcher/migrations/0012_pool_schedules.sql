-- Calendar schedules for pools: {"weekdays": ["mon"], "at": "09:00", "timezone": "Europe/Berlin",
-- "every_weeks": 1, "starting": "2027-03-22"} (services/matcher/schedules.py computes each
-- next_round_at from it). A pool has an interval (every_seconds) or a schedule, not both.
ALTER TABLE matcher.pools ADD COLUMN schedule jsonb;
ALTER TABLE matcher.pools ADD CONSTRAINT pools_one_schedule
    CHECK (schedule IS NULL OR every_seconds IS NULL);
