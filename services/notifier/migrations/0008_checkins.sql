-- "Did you meet?" (services/notifier/checkins.py): one check-in per participant of an
-- introduction, created when the introduction is delivered, sent when its time comes, then
-- answered (met, not yet, didn't happen, not for me), expired or skipped. No name, address or
-- id of a person is stored here: the seat (notifier.intro_seats, which erasure scrubs) says who.
CREATE TABLE notifier.checkins (
    intro_id      uuid        NOT NULL REFERENCES notifier.intros (id),
    position      integer     NOT NULL,
    state         text        NOT NULL DEFAULT 'due' CHECK (state IN (
                      'due', 'sent', 'not_yet', 'sent_again', 'met', 'didnt_happen',
                      'not_for_me', 'still_not_yet', 'expired', 'skipped')),
    -- when the introduction was delivered; the check-in is due `after_seconds` later (the
    -- pool's, from the proposal; NULL: ROAC_CHECKIN_AFTER_SECONDS)
    introduced_at timestamptz NOT NULL,
    after_seconds integer     CHECK (after_seconds >= 1),
    -- after a "not yet": when it is asked again
    again_at      timestamptz,
    sent_at       timestamptz,
    answered_at   timestamptz,
    rating        smallint    CHECK (rating BETWEEN 1 AND 5),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (intro_id, position)
);
CREATE INDEX checkins_waiting ON notifier.checkins (introduced_at)
    WHERE state IN ('due', 'not_yet');
CREATE INDEX checkins_asked ON notifier.checkins (sent_at) WHERE state IN ('sent', 'sent_again');

ALTER TABLE notifier.deliveries
    DROP CONSTRAINT deliveries_kind_check,
    ADD CONSTRAINT deliveries_kind_check
        CHECK (kind IN ('ask', 'intro', 'resource', 'checkin', 'checkin_again'));
