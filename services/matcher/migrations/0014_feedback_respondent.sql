-- Feedback from the notifier's check-ins (intro.feedback_given.v1) names its respondent: their
-- position among the proposal's participants (no id of a person). A later event of the same
-- respondent (the rating after "we met") replaces their row, so nothing is counted twice.
-- Operator feedback (POST /v1/intros/{id}/feedback) has no respondent, as before.
ALTER TABLE matcher.feedback ADD COLUMN respondent smallint CHECK (respondent BETWEEN 0 AND 5);
CREATE UNIQUE INDEX feedback_once_per_respondent ON matcher.feedback (proposal_id, respondent)
    WHERE respondent IS NOT NULL;
