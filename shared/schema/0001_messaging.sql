-- Inbox and outbox shared by every service that consumes or publishes from a transaction.
CREATE SCHEMA IF NOT EXISTS messaging;

-- Idempotent consumers: a (consumer, message_id) row is written in the same transaction as the
-- state change it caused, so a redelivered event finds its row and changes nothing.
CREATE TABLE messaging.inbox (
    consumer    text        NOT NULL,
    message_id  uuid        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);

-- Transactional outbox: events a transaction wants published, written with its state change;
-- a relay publishes them with confirms and deletes the rows it published.
CREATE TABLE messaging.outbox (
    id             bigserial   PRIMARY KEY,
    producer       text        NOT NULL,
    message_id     uuid        NOT NULL UNIQUE,
    routing_key    text        NOT NULL,
    correlation_id text        NOT NULL,
    body           bytea       NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX outbox_by_producer ON messaging.outbox (producer, id);
