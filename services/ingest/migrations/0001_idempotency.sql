-- Idempotency keys: a retried request with the same key gets the first answer and publishes
-- nothing new. Kept at least 24 hours (ingest deletes older ones).
CREATE SCHEMA IF NOT EXISTS ingest;

CREATE TABLE ingest.idempotency_keys (
    integration text        NOT NULL,
    key         text        NOT NULL,
    -- sha256 of method, path and body: the same key with another request is a conflict
    fingerprint bytea       NOT NULL,
    state       text        NOT NULL CHECK (state IN ('pending', 'done')),
    response    jsonb,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (integration, key)
);
CREATE INDEX idempotency_keys_by_age ON ingest.idempotency_keys (created_at);
