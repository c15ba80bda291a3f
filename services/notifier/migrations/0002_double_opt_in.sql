-- Introductions the notifier is carrying through their life (asks, answers, the introduction),
-- every delivery attempt, and people who opted out.

-- The proposal as received: names and channels are personal data (erasure scrubs `intro`).
CREATE TABLE notifier.intros (
    id             uuid        PRIMARY KEY,
    mode           text        NOT NULL CHECK (mode IN ('direct', 'double_opt_in')),
    state          text        NOT NULL
                   CHECK (state IN ('asked', 'accepted', 'introduced', 'declined', 'expired', 'failed')),
    intro          jsonb       NOT NULL,
    correlation_id text        NOT NULL,
    proposed_at    timestamptz NOT NULL,
    -- unanswered asks expire then
    asked_until    timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX intros_open_asks ON notifier.intros (asked_until) WHERE state = 'asked';
CREATE INDEX intros_by_created ON notifier.intros (created_at DESC, id);

CREATE TABLE notifier.intro_seats (
    intro_id    uuid        NOT NULL REFERENCES notifier.intros (id),
    position    integer     NOT NULL,
    source      text        NOT NULL,
    external_id text        NOT NULL,
    role        text        NOT NULL CHECK (role IN ('peer', 'seeker', 'helper')),
    answer      text        NOT NULL
                CHECK (answer IN ('waiting', 'asked', 'accepted', 'declined', 'expired')),
    answered_at timestamptz,
    PRIMARY KEY (intro_id, position)
);
CREATE INDEX intro_seats_by_person ON notifier.intro_seats (source, external_id);

CREATE TABLE notifier.opt_outs (
    source       text        NOT NULL,
    external_id  text        NOT NULL,
    opted_out_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, external_id)
);

-- Deliveries: one row per (introduction, kind of message, recipient), whatever the channel.
ALTER TABLE notifier.deliveries DROP CONSTRAINT deliveries_status_check;
DO $$
DECLARE unique_name text;
BEGIN
    SELECT conname INTO unique_name FROM pg_constraint
    WHERE conrelid = 'notifier.deliveries'::regclass AND contype = 'u';
    EXECUTE format('ALTER TABLE notifier.deliveries DROP CONSTRAINT %I', unique_name);
END $$;
ALTER TABLE notifier.deliveries
    ADD COLUMN kind          text        NOT NULL DEFAULT 'intro' CHECK (kind IN ('ask', 'intro')),
    ADD COLUMN positions     integer[]   NOT NULL DEFAULT '{}',
    ADD COLUMN channel_index integer     NOT NULL DEFAULT 0,
    -- bumped whenever a new job is scheduled: an older copy of a job is recognised and dropped
    ADD COLUMN generation    integer     NOT NULL DEFAULT 0,
    ADD COLUMN not_before    timestamptz NOT NULL DEFAULT now(),
    ADD CONSTRAINT deliveries_status_check CHECK (
        status IN ('pending', 'sent', 'failed', 'parked', 'cancelled', 'suppressed')),
    ADD CONSTRAINT deliveries_one_per_recipient
        UNIQUE (proposal_id, kind, recipient_source, recipient_external_id);

CREATE TABLE notifier.delivery_attempts (
    delivery_id uuid        NOT NULL REFERENCES notifier.deliveries (id),
    attempt     integer     NOT NULL,
    channel     text        NOT NULL,
    outcome     text        NOT NULL CHECK (outcome IN ('sent', 'transient', 'permanent')),
    detail      text,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (delivery_id, attempt)
);

-- Before this migration every delivery row was a direct introduction by email.
INSERT INTO notifier.intros (id, mode, state, intro, correlation_id, proposed_at)
SELECT DISTINCT ON (proposal_id) proposal_id, 'direct', 'introduced', '{}'::jsonb, '', created_at
FROM notifier.deliveries ORDER BY proposal_id, created_at;
