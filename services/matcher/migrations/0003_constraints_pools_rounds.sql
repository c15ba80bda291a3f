-- Constraints (snooze, block list, tags for pools, per-person cap), pools, rounds and feedback.

ALTER TABLE matcher.contacts
    ADD COLUMN tags text[] NOT NULL DEFAULT '{}',
    ADD COLUMN snoozed_until timestamptz,
    ADD COLUMN last_introduced_at timestamptz;
CREATE INDEX contacts_by_tag ON matcher.contacts USING gin (tags);

-- A person's own block list, by contact (both directions are checked when matching).
CREATE TABLE matcher.blocks (
    contact_id bigint NOT NULL REFERENCES matcher.contacts (id),
    blocked_id bigint NOT NULL REFERENCES matcher.contacts (id),
    PRIMARY KEY (contact_id, blocked_id)
);
CREATE INDEX blocks_by_blocked ON matcher.blocks (blocked_id);

-- The per-person cap counts a person's proposals in the last week through this index.
ALTER TABLE matcher.proposal_participants
    ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX proposal_participants_recent ON matcher.proposal_participants (contact_id, created_at);

-- Every group ever proposed, once: "never the same group twice" (or not within the cooldown),
-- and never again after a decline, is an insert into this table that must succeed.
CREATE TABLE matcher.groups (
    group_key        text        PRIMARY KEY,
    last_proposed_at timestamptz NOT NULL,
    declined         boolean     NOT NULL DEFAULT false
);
INSERT INTO matcher.groups (group_key, last_proposed_at)
    SELECT group_key, created_at FROM matcher.proposals;
ALTER TABLE matcher.proposals DROP CONSTRAINT proposals_group_key_key;
CREATE INDEX proposals_by_group ON matcher.proposals (group_key);

CREATE TABLE matcher.pools (
    name        text        PRIMARY KEY,
    -- Who is in it: {"tags": [...], "sources": [...], "organizations": [...]}; empty = everyone.
    selector    jsonb       NOT NULL DEFAULT '{}'::jsonb,
    group_size  smallint    NOT NULL DEFAULT 2 CHECK (group_size BETWEEN 2 AND 6),
    serendipity real        NOT NULL DEFAULT 0 CHECK (serendipity >= 0),
    -- {"different_organization": "required", "same_timezone": "preferred", ...}
    rules       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    -- Scheduled rounds: every this many seconds from next_round_at; NULL = on request only.
    every_seconds integer   CHECK (every_seconds IS NULL OR every_seconds >= 60),
    next_round_at timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO matcher.pools (name) VALUES ('everyone');

CREATE TABLE matcher.rounds (
    id           uuid        PRIMARY KEY,
    pool         text        NOT NULL REFERENCES matcher.pools (name),
    group_size   smallint    NOT NULL CHECK (group_size BETWEEN 2 AND 6),
    seed         bigint      NOT NULL,
    serendipity  real        NOT NULL,
    -- A dry run plans the round (stored in `plan`) and proposes nothing.
    dry_run      boolean     NOT NULL DEFAULT false,
    status       text        NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'running', 'done', 'failed')),
    -- A worker owns a running round until its lease ends; a crashed worker's round is retaken.
    worker       uuid,
    lease_until  timestamptz,
    attempts     integer     NOT NULL DEFAULT 0,
    stats        jsonb,
    plan         jsonb,
    error        text,
    requested_at timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    finished_at  timestamptz
);
CREATE INDEX rounds_waiting ON matcher.rounds (requested_at) WHERE status IN ('pending', 'running');

ALTER TABLE matcher.proposals ADD COLUMN round_id uuid REFERENCES matcher.rounds (id);
CREATE INDEX proposals_by_round ON matcher.proposals (round_id) WHERE round_id IS NOT NULL;

-- What people said about an introduction (POST /v1/intros/{id}/feedback).
CREATE TABLE matcher.feedback (
    proposal_id uuid        NOT NULL REFERENCES matcher.proposals (id),
    outcome     text        NOT NULL CHECK (outcome IN ('met', 'did_not_meet', 'declined')),
    rating      smallint    CHECK (rating BETWEEN 1 AND 5),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX feedback_by_proposal ON matcher.feedback (proposal_id);

-- Topics that led to meetings count more: a multiplier kept per topic from feedback.
ALTER TABLE matcher.topics ADD COLUMN meetings integer NOT NULL DEFAULT 0;
