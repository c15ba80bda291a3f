-- Inbox rows are pruned once older than the deduplication window (shared/inbox.py,
-- ROAC_INBOX_RETENTION_DAYS). Rows arrive in received_at order, so a BRIN index finds the old
-- ones for a few pages of index and costs next to nothing on the consumers' inserts.
CREATE INDEX inbox_by_received_at ON messaging.inbox USING brin (received_at);
