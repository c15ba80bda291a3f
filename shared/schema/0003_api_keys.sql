-- API keys of integrations (`roac keys create NAME`). Every service with /v1/ routes reads them,
-- so they live in a schema of their own rather than in one service's. Only the SHA-256 digest
-- of a secret is stored; the secret itself is printed once and never kept.
CREATE SCHEMA IF NOT EXISTS access;

CREATE TABLE access.api_keys (
    id           bigserial   PRIMARY KEY,
    name         text        NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    digest       bytea       NOT NULL UNIQUE CHECK (octet_length(digest) = 32),
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- Written a few seconds late: each process collects uses in memory and flushes them with
    -- its periodic reload, so a request never waits on the database for it.
    last_used_at timestamptz,
    revoked_at   timestamptz
);
-- A name is the integration's identity (events, metrics, idempotency keys): one active key per
-- name; a revoked key's name can be given to a new key.
CREATE UNIQUE INDEX api_keys_active_name ON access.api_keys (name) WHERE revoked_at IS NULL;
