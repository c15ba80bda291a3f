-- When an identity withdrew an interest (`interest.withdrawn.v1`): a declaration of it that
-- occurred earlier but arrives later (another message, applied after the withdrawal) is
-- ignored instead of bringing the interest back. Keyed by the topic's name, so a withdrawal
-- that overtakes the topic's first declaration holds too; erasing the identity deletes it.
CREATE TABLE matcher.interest_withdrawals (
    identity_id  bigint      NOT NULL REFERENCES matcher.identities (id) ON DELETE CASCADE,
    topic        text        NOT NULL,
    kind         text        NOT NULL CHECK (kind IN ('likes', 'seeks', 'offers')),
    withdrawn_at timestamptz NOT NULL,
    PRIMARY KEY (identity_id, topic, kind)
);
