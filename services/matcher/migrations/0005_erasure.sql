-- Erased identities: SHA-256 of source NUL external_id (shared/erasure.py), never the id
-- itself. An event for an erased identity that occurred before the erasure is dropped.
CREATE TABLE matcher.erasures (
    digest    bytea       PRIMARY KEY CHECK (octet_length(digest) = 32),
    erased_at timestamptz NOT NULL
);
ALTER TABLE matcher.contacts ADD COLUMN erased_at timestamptz;
