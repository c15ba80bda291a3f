-- Erasure takes the erased person out of the block lists other people's contact events
-- declared (profile -> 'blocks'): found by containment, through this index of the few profiles
-- that list any block, not by reading every identity.
CREATE INDEX IF NOT EXISTS identities_declared_blocks
    ON matcher.identities USING gin ((profile -> 'blocks') jsonb_path_ops)
    WHERE profile -> 'blocks' <> '[]'::jsonb;
