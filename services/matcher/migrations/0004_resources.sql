-- People to information: resources (POST /v1/resources) and who each was brought to.
CREATE TABLE matcher.resources (
    id         uuid        PRIMARY KEY,  -- derived from the URL: posting it again adds no one twice
    url        text        NOT NULL,
    title      text        NOT NULL,
    topics     jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE matcher.resource_recipients (
    resource_id uuid        NOT NULL REFERENCES matcher.resources (id),
    contact_id  bigint      NOT NULL REFERENCES matcher.contacts (id),
    proposal_id uuid        NOT NULL UNIQUE,
    score       real        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (resource_id, contact_id)
);
-- The per-person resource cap counts a person's resources of the last week through this index.
CREATE INDEX resource_recipients_recent ON matcher.resource_recipients (contact_id, created_at);
