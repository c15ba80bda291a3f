-- Why each merge happened: identities merge only within one source, or across two sources the
-- operator lists as verifying their identifiers (ROAC_IDENTITY_VERIFIED_SOURCES). The reason and
-- the two sources whose identities shared the key are kept with the merge, and shown by
-- GET /v1/contacts/{source}/{external_id}/identity. Merges made before this was recorded (when
-- any two sources merged) say 'unrecorded'.
ALTER TABLE matcher.merges
    ADD COLUMN reason text NOT NULL DEFAULT 'unrecorded'
        CHECK (reason IN ('same_source', 'verified_sources', 'unrecorded')),
    ADD COLUMN sources text[] NOT NULL DEFAULT '{}';
ALTER TABLE matcher.merges ALTER COLUMN reason DROP DEFAULT;

-- A person's merge history (undone merges included) is read by the contacts on either side.
CREATE INDEX merges_by_survivor_all ON matcher.merges (survivor_id);
CREATE INDEX merges_by_absorbed ON matcher.merges (absorbed_id);
-- ... and by the contacts it absorbed (tombstones point at their survivor).
CREATE INDEX contacts_merged_into ON matcher.contacts (merged_into) WHERE merged_into IS NOT NULL;
