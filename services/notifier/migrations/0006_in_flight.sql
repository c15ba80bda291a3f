-- Never twice: every delivery attempt is recorded in flight, in its own committed transaction,
-- before its provider is called; the result is recorded after (services/notifier/in_flight.py).
-- A delivery still in flight after ROAC_DELIVERY_IN_FLIGHT_SECONDS was orphaned (its sender
-- died, or could not write the result) and is reconciled, never blindly resent.
ALTER TABLE notifier.deliveries
    -- the attempt's idempotency key (webhook-id, Matrix transaction id; the email's Message-ID
    -- derives from the delivery id): a resend of an orphaned attempt carries the same one
    ADD COLUMN in_flight_key   text,
    -- when the attempt was recorded, just before its provider was called
    ADD COLUMN in_flight_since timestamptz,
    -- this attempt's claim: the result of an attempt reconciled meanwhile changes nothing
    ADD COLUMN in_flight_token uuid,
    -- orphaned attempts of this delivery resent by reconciliation
    ADD COLUMN resends         integer NOT NULL DEFAULT 0;
CREATE INDEX deliveries_in_flight ON notifier.deliveries (in_flight_since)
    WHERE in_flight_since IS NOT NULL;

-- An attempt whose outcome nobody knows (in flight at a crash, reconciled).
ALTER TABLE notifier.delivery_attempts
    DROP CONSTRAINT delivery_attempts_outcome_check,
    ADD CONSTRAINT delivery_attempts_outcome_check
        CHECK (outcome IN ('sent', 'transient', 'permanent', 'unknown'));
