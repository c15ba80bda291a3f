-- One row per (introduction, recipient, channel): the key that makes delivery idempotent.
-- No address or name is stored here; the proposal event carries them.
CREATE SCHEMA IF NOT EXISTS notifier;

CREATE TABLE notifier.deliveries (
    id                    uuid        PRIMARY KEY,
    proposal_id           uuid        NOT NULL,
    recipient_source      text        NOT NULL,
    recipient_external_id text        NOT NULL,
    channel               text        NOT NULL,
    status                text        NOT NULL CHECK (status IN ('pending', 'sent', 'failed')),
    attempts              integer     NOT NULL DEFAULT 0,
    provider_message_id   text,
    last_error            text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    sent_at               timestamptz,
    UNIQUE (proposal_id, recipient_source, recipient_external_id, channel)
);
CREATE INDEX deliveries_by_status ON notifier.deliveries (status, updated_at);
