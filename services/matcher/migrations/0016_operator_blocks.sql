-- Pairs an operator blocked (`POST /v1/contacts/{source}/{external_id}/blocks`, the console's
-- "block a pairing"): never introduced to each other, whatever their integrations send later.
-- Kept by identity, as the blocks people declare in their contact events are, so a merge or an
-- unmerge carries them (identity_resolution.rebuild_blocks reads both) and matcher.blocks, what
-- matching reads, holds them like any other block. Erasing either person deletes their
-- identities, and with them the row.
CREATE TABLE matcher.operator_blocks (
    identity_id         bigint      NOT NULL REFERENCES matcher.identities (id) ON DELETE CASCADE,
    blocked_identity_id bigint      NOT NULL REFERENCES matcher.identities (id) ON DELETE CASCADE,
    blocked_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (identity_id, blocked_identity_id),
    CHECK (identity_id <> blocked_identity_id)
);
CREATE INDEX operator_blocks_by_blocked ON matcher.operator_blocks (blocked_identity_id);
