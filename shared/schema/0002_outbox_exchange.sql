-- Outbox rows may target another exchange than roac.events: the notifier schedules retries by
-- publishing to its delay queues through the default exchange ('').
ALTER TABLE messaging.outbox ADD COLUMN exchange text NOT NULL DEFAULT 'roac.events';
ALTER TABLE messaging.outbox ADD COLUMN headers jsonb;
