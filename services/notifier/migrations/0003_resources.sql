-- Resources brought to people (resource.proposed.v1): one row per proposal, i.e. per
-- (resource, recipient), delivered like any message through notifier.deliveries (kind
-- 'resource', positions {0}).

-- The proposal as received (ResourceData): the recipient's name and channels are personal data,
-- as in notifier.intros.
CREATE TABLE notifier.resources (
    id                    uuid        PRIMARY KEY,  -- the proposal id
    resource_id           uuid        NOT NULL,
    recipient_source      text        NOT NULL,
    recipient_external_id text        NOT NULL,
    proposal              jsonb       NOT NULL,
    correlation_id        text        NOT NULL,
    proposed_at           timestamptz NOT NULL,
    created_at            timestamptz NOT NULL DEFAULT now(),
    -- A resource reaches a person once, even if it were proposed again under another id.
    -- Also the index of GET /v1/resources/deliveries?resource=<id>.
    CONSTRAINT resources_once_per_recipient
        UNIQUE (resource_id, recipient_source, recipient_external_id)
);

ALTER TABLE notifier.deliveries
    DROP CONSTRAINT deliveries_kind_check,
    ADD CONSTRAINT deliveries_kind_check CHECK (kind IN ('ask', 'intro', 'resource'));
