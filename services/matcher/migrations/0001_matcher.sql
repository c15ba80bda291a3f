-- The matcher's view of people, their interests and the introductions it proposed.
CREATE SCHEMA IF NOT EXISTS matcher;

CREATE TABLE matcher.contacts (
    id           bigserial   PRIMARY KEY,
    -- NULL name: known only from an interest so far (its contact event has not arrived).
    name         text,
    organization text,
    timezone     text,
    channels     jsonb       NOT NULL DEFAULT '[]'::jsonb,
    deliverable  boolean     NOT NULL DEFAULT false,
    -- occurred_at of the contact event applied last: an older event arriving late is ignored.
    profile_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- How integrations know a person. Several identities may point at one contact.
CREATE TABLE matcher.identities (
    source      text        NOT NULL,
    external_id text        NOT NULL,
    contact_id  bigint      NOT NULL REFERENCES matcher.contacts (id) DEFERRABLE INITIALLY DEFERRED,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, external_id)
);
CREATE INDEX identities_by_contact ON matcher.identities (contact_id);

CREATE TABLE matcher.topics (
    id     bigserial PRIMARY KEY,
    name   text      NOT NULL UNIQUE,
    -- distinct people with any interest in the topic: the document frequency for rarity
    people integer   NOT NULL DEFAULT 0 CHECK (people >= 0)
);

CREATE TABLE matcher.interests (
    contact_id  bigint      NOT NULL REFERENCES matcher.contacts (id),
    topic_id    bigint      NOT NULL REFERENCES matcher.topics (id),
    kind        text        NOT NULL CHECK (kind IN ('likes', 'seeks', 'offers')),
    weight      real        NOT NULL CHECK (weight > 0),
    declared_at timestamptz NOT NULL,
    PRIMARY KEY (contact_id, topic_id, kind)
);
-- Candidate lookup: people with a topic, read as a window from a random contact id onwards,
-- without touching other topics or all contacts.
CREATE INDEX interests_by_topic ON matcher.interests (topic_id, contact_id) INCLUDE (kind, weight);

-- Counters kept in the transactions that change them (population for rarity).
CREATE TABLE matcher.counters (
    name  text   PRIMARY KEY,
    value bigint NOT NULL
);
INSERT INTO matcher.counters (name, value) VALUES ('contacts', 0);

CREATE TABLE matcher.proposals (
    id             uuid        PRIMARY KEY,
    -- sorted participant contact ids: a group is proposed at most once
    group_key      text        NOT NULL UNIQUE,
    score          real        NOT NULL,
    reason         text        NOT NULL,
    topics         jsonb       NOT NULL,
    correlation_id text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE matcher.proposal_participants (
    proposal_id     uuid   NOT NULL REFERENCES matcher.proposals (id),
    contact_id      bigint NOT NULL REFERENCES matcher.contacts (id),
    delivery_status text   NOT NULL DEFAULT 'pending'
                    CHECK (delivery_status IN ('pending', 'delivered', 'failed')),
    PRIMARY KEY (proposal_id, contact_id)
);
CREATE INDEX proposal_participants_by_contact ON matcher.proposal_participants (contact_id);
