-- More of what a person chose on their preferences page (services/notifier/preferences.py):
-- their monthly cap, the order of their channel types, and the interest changes they made on
-- the page (each `{"topic", "kind", "withdrawn", "at"}`), shown over what the matcher holds
-- until the matcher has applied them (preferences.shown_interests). Erasure deletes the row.
ALTER TABLE notifier.preferences
    ADD COLUMN cap_per_month smallint CHECK (cap_per_month >= 1),
    ADD COLUMN channel_order text[],
    ADD COLUMN interest_changes jsonb NOT NULL DEFAULT '[]'::jsonb;
