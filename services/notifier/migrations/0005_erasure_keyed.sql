-- Erasure digests become HMAC-SHA256 under ROAC_ERASURE_KEY (shared/erasure.py). The rows
-- written before are plain SHA-256 of source NUL external_id: they cannot be re-keyed without
-- the ids, so they stay (keyed = false) and lookups also try the legacy digest; a legacy row is
-- replaced by a keyed one when the same person is erased again.
ALTER TABLE notifier.erasures ADD COLUMN keyed boolean NOT NULL DEFAULT false;
ALTER TABLE notifier.erasures ALTER COLUMN keyed SET DEFAULT true;
