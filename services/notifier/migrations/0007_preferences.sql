-- What each person chose on their preferences page (services/notifier/preferences.py): the
-- page shows it back to them. The matcher applies the same choices from
-- contact.preferences_changed.v1 to its own tables; erasure deletes the row.
CREATE TABLE notifier.preferences (
    source       text        NOT NULL,
    external_id  text        NOT NULL,
    paused_until timestamptz,
    cap_per_week smallint    CHECK (cap_per_week >= 1),
    language     text,
    -- when they last chose to receive introductions again after unsubscribing
    opted_in_at  timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, external_id)
);
