-- Scoped API keys bound to their sources (shared/scopes.py), and two active keys per name so a
-- key can be rotated without downtime (create the second, move the integration, revoke the
-- first). Keys created before scopes existed keep what they could do then, except managing
-- keys: every integration scope on every source (sources NULL); `roac keys list` shows it.
ALTER TABLE access.api_keys
    ADD COLUMN scopes text[] NOT NULL DEFAULT ARRAY[
        'events:write', 'contacts:erase', 'contacts:read', 'intros:read', 'intros:write',
        'rounds:read', 'rounds:write', 'resources:read', 'resources:write'
    ]::text[],
    -- NULL: any source; otherwise the sources whose people this key may write, erase or read.
    ADD COLUMN sources text[],
    -- Which of the name's two slots the key holds while active.
    ADD COLUMN slot smallint NOT NULL DEFAULT 1 CHECK (slot IN (1, 2));
-- New keys always say what they may do.
ALTER TABLE access.api_keys ALTER COLUMN scopes DROP DEFAULT;
ALTER TABLE access.api_keys ALTER COLUMN slot DROP DEFAULT;

DROP INDEX access.api_keys_active_name;
CREATE UNIQUE INDEX api_keys_active_name_slot ON access.api_keys (name, slot)
    WHERE revoked_at IS NULL;
