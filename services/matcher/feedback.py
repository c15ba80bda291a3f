"""Feedback on an introduction feeds the matcher: a declined group is never proposed again (not
even after a cooldown), and topics whose introductions led to meetings count more in scoring
(`scoring.topic_boost`). Each proposal's meeting counts once, however many participants say so.

Feedback comes from operators (`POST /v1/intros/{id}/feedback`) and from people themselves:
their answers to the notifier's check-ins ("did you meet?", `intro.feedback_given.v1`), applied
by `apply_given` in the consumer's transaction: *we met* is a meeting, *it didn't happen* no
meeting, *not for me* declines the group for good. Each respondent has one row per proposal (a
later event of theirs, the rating after *we met*, replaces it), so redeliveries and ratings
count nothing twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING
from uuid import UUID

from services.matcher import metrics
from shared.events import CheckinAnswer, IntroFeedbackGiven

if TYPE_CHECKING:
    from services.matcher.store import MatcherStore
    from services.matcher.store.uow import MatcherUnitOfWork

log = logging.getLogger("roac.matcher")


class FeedbackOutcome(StrEnum):
    MET = "met"
    DID_NOT_MEET = "did_not_meet"
    DECLINED = "declined"


# A check-in's answer as the matcher's feedback.
FROM_CHECKIN = {
    CheckinAnswer.MET: FeedbackOutcome.MET,
    CheckinAnswer.DIDNT_HAPPEN: FeedbackOutcome.DID_NOT_MEET,
    CheckinAnswer.NOT_FOR_ME: FeedbackOutcome.DECLINED,
}


class UnknownProposal(LookupError):
    pass


@dataclass(frozen=True)
class FeedbackSummary:
    proposal_id: UUID
    outcomes: dict[str, int]
    mean_rating: float | None


class Feedback:
    def __init__(self, store: MatcherStore) -> None:
        self._store = store

    async def record(
        self, proposal_id: UUID, outcome: FeedbackOutcome, rating: int | None
    ) -> FeedbackSummary:
        async with self._store.unit_of_work() as uow:
            first_meeting = await uow.proposals.record_feedback(proposal_id, outcome.value, rating)
            if first_meeting is None:
                raise UnknownProposal(str(proposal_id))
            if outcome is FeedbackOutcome.DECLINED:
                await uow.proposals.decline_group(proposal_id)
            elif outcome is FeedbackOutcome.MET and first_meeting:
                await uow.proposals.count_meeting(proposal_id)
            outcomes, mean = await uow.proposals.feedback_summary(proposal_id)
        metrics.FEEDBACK.labels(outcome.value).inc()
        return FeedbackSummary(proposal_id, outcomes, mean)


async def apply_given(uow: MatcherUnitOfWork, events: Sequence[IntroFeedbackGiven]) -> None:
    """People's answers to their check-ins (`intro.feedback_given.v1`), in the consumer's
    transaction; an unknown proposal (erased since) is skipped."""
    for event in sorted(events, key=lambda e: (e.data.proposal_id, e.occurred_at)):
        data = event.data
        outcome = FROM_CHECKIN[data.outcome]
        first_meeting = await uow.proposals.record_feedback(
            data.proposal_id, outcome.value, data.rating, respondent=data.respondent
        )
        if first_meeting is None:
            log.info("feedback on unknown proposal %s skipped", data.proposal_id)
            continue
        if outcome is FeedbackOutcome.DECLINED:
            await uow.proposals.decline_group(data.proposal_id)
        elif outcome is FeedbackOutcome.MET and first_meeting:
            await uow.proposals.count_meeting(data.proposal_id)
        metrics.FEEDBACK.labels(outcome.value).inc()
