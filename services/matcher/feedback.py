"""Feedback on an introduction feeds the matcher: a declined group is never proposed again (not
even after a cooldown), and topics whose introductions led to meetings count more in scoring
(`scoring.topic_boost`). Each proposal's meeting counts once, however many participants say so.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING
from uuid import UUID

from services.matcher import metrics

if TYPE_CHECKING:
    from services.matcher.store import MatcherStore


class FeedbackOutcome(StrEnum):
    MET = "met"
    DID_NOT_MEET = "did_not_meet"
    DECLINED = "declined"


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
