-- How long after a pool's introductions the notifier asks "did you meet?" (days); NULL: the
-- notifier's ROAC_CHECKIN_AFTER_SECONDS.
ALTER TABLE matcher.pools
    ADD COLUMN checkin_after_days integer CHECK (checkin_after_days BETWEEN 1 AND 90);
