-- Erased people: SHA-256 of source NUL external_id (shared/erasure.py), never the id itself.
-- A proposal naming an erased person is recorded scrubbed and sends nothing.
CREATE TABLE notifier.erasures (
    digest    bytea       PRIMARY KEY CHECK (octet_length(digest) = 32),
    erased_at timestamptz NOT NULL
);
