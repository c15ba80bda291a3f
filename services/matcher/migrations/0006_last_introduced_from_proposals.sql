-- When a person was last introduced is read from their newest proposal (index on
-- proposal_participants (contact_id, created_at)) instead of being written on every proposal:
-- updating 100,000 contact rows per round rewrote every index of the table (the tags GIN too).
ALTER TABLE matcher.contacts DROP COLUMN last_introduced_at;
