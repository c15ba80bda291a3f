-- More of a person's own choices (contact.preferences_changed.v1, from the notifier's
-- preferences page): a monthly cap below which live matching and rounds keep them
-- (services/matcher/availability.py, `within_monthly_cap`), and the order of their channel
-- types, first choice first, in which their introductions present their channels
-- (shared.events.in_preferred_order): their messages go by the first, fallbacks follow it.
ALTER TABLE matcher.contacts
    ADD COLUMN own_cap_per_month smallint CHECK (own_cap_per_month >= 1),
    ADD COLUMN channel_order text[];
