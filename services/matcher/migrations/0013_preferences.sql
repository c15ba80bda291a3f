-- A person's own choices (contact.preferences_changed.v1, from the notifier's preferences
-- page). They survive the integration's next contact.upserted.v1: a pause of theirs keeps
-- `snoozed_until` at least `paused_until`, their language wins over the integration's, and
-- their weekly cap applies below the operator's (services/matcher/availability.py).
ALTER TABLE matcher.contacts
    ADD COLUMN paused_until timestamptz,
    ADD COLUMN own_cap_per_week smallint CHECK (own_cap_per_week >= 1),
    ADD COLUMN own_language text,
    -- when they last chose to receive introductions again after unsubscribing
    ADD COLUMN opted_in_at timestamptz,
    -- the newest preferences event applied (an older one arriving late changes nothing)
    ADD COLUMN preferences_at timestamptz;
