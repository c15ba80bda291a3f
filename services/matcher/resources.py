"""People to information: bring a resource (an article, an event, a job post) to the people most
interested in its topics.

Recipients are the reachable people who like or seek one of the resource's topics, ranked by
the sum of their (age-decayed) interest weights on those topics; snoozed and opted-out people
are left out, and so is anyone who already received `ROAC_RESOURCE_CAP_PER_WEEK` resources in
the last seven days (re-checked under their row locks, like the introduction cap). A resource's
id derives from its URL, so posting it again reaches only people who did not get it yet. Each
(resource, recipient) becomes one `resource.proposed.v1`, written with its outbox row in the
same transaction; the notifier delivers it like any proposal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

from services.matcher.scoring import decayed_weight
from services.matcher.store.rows import HeldTopic
from shared.events import ResourceData, ResourceProposed

if TYPE_CHECKING:
    from services.matcher.store import MatcherStore


@dataclass(frozen=True, slots=True)
class Recipient:
    contact_id: int
    score: float
    topic_ids: tuple[int, ...]


def resource_id(url: str) -> UUID:
    return uuid5(NAMESPACE_URL, url)


def rank_recipients(
    held: Sequence[HeldTopic], now: datetime, half_life_days: float, limit: int
) -> list[Recipient]:
    """The `limit` people most interested, best first (ties: the lower contact id)."""
    scores: dict[int, float] = {}
    topics: dict[int, list[int]] = {}
    for h in held:
        value = decayed_weight(h.weight, h.declared_at, now, half_life_days)
        scores[h.contact_id] = scores.get(h.contact_id, 0.0) + value
        topics.setdefault(h.contact_id, []).append(h.topic_id)
    ranked = sorted(scores, key=lambda c: (-scores[c], c))[:limit]
    return [Recipient(c, scores[c], tuple(sorted(set(topics[c])))) for c in ranked]


def reason(topic_names: Sequence[str]) -> str:
    names = list(topic_names)
    joined = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"Because you care about {joined}."


@dataclass(frozen=True)
class SharedResource:
    resource_id: UUID
    recipients: int  # reached by this request
    total_recipients: int  # reached by this resource so far


@dataclass(frozen=True)
class ResourcePreview:
    people: int  # who may receive it now
    sample: list[dict[str, Any]]  # a page of them, best first
    next_offset: int | None


class Resources:
    def __init__(self, store: MatcherStore, *, cap_per_week: int, half_life_days: float) -> None:
        self._store = store
        self._cap = cap_per_week
        self._half_life = half_life_days

    async def share(
        self, url: str, title: str, topics: Sequence[str], limit: int, correlation_id: str
    ) -> SharedResource:
        rid = resource_id(url)
        async with self._store.unit_of_work() as uow:
            await uow.resources.upsert_resource(rid, url, title, list(topics))
            topic_ids = await uow.topics.topic_ids(topics)
            held = await uow.resources.interested_in(rid, list(topic_ids.values()), self._cap)
            now = datetime.now(UTC)
            ranked = rank_recipients(held, now, self._half_life, limit)
            # The cap, opt-out and snooze again under the recipients' row locks.
            room = await uow.resources.lock_resource_room([r.contact_id for r in ranked], self._cap)
            chosen = [r for r in ranked if r.contact_id in room]
            details = await uow.contacts.participants(r.contact_id for r in chosen)
            names = {v: k for k, v in topic_ids.items()}
            events = []
            for r in chosen:
                recipient = details[r.contact_id]
                events.append(
                    ResourceProposed(
                        source="matcher",
                        correlation_id=correlation_id,
                        data=ResourceData(
                            proposal_id=uuid4(),
                            resource_id=rid,
                            url=url,
                            title=title,
                            recipient=recipient,
                            topics=[names[t] for t in r.topic_ids],
                            reason=reason([names[t] for t in r.topic_ids]),
                            triggered_at=now,
                        ),
                    )
                )
            inserted = await uow.resources.insert_resource_recipients(
                rid,
                [
                    (r.contact_id, e.data.proposal_id, r.score)
                    for r, e in zip(chosen, events, strict=True)
                ],
            )
            await uow.enqueue([e for e in events if e.data.proposal_id in inserted])
            total = await uow.resources.resource_recipient_count(rid)
        return SharedResource(rid, len(inserted), total)

    async def preview(
        self, topics: Sequence[str], url: str | None, offset: int, limit: int
    ) -> ResourcePreview:
        """Who sharing a resource on `topics` would reach now, without sharing it: how many may
        receive it (available, under the resource cap, not yet given `url`'s resource) and,
        best first (the order a share takes them in), `limit` of them from `offset`: each as a
        reference (source, id), without name or address, like the notifier's deliveries."""
        # An id no resource has when there is no URL: nobody received it yet.
        rid = resource_id(url) if url else uuid4()
        async with self._store.unit_of_work() as uow:
            topic_ids = await uow.topics.topic_ids(topics)
            held = await uow.resources.interested_in(rid, list(topic_ids.values()), self._cap)
            ranked = rank_recipients(held, datetime.now(UTC), self._half_life, len(held))
            page = ranked[offset : offset + limit]
            details = await uow.contacts.participants(r.contact_id for r in page)
        names = {v: k for k, v in topic_ids.items()}
        sample = [
            {
                "source": details[r.contact_id].source,
                "external_id": details[r.contact_id].external_id,
                "score": round(r.score, 4),
                "topics": [names[t] for t in r.topic_ids],
            }
            for r in page
            if r.contact_id in details
        ]
        following = offset + limit
        return ResourcePreview(len(ranked), sample, following if following < len(ranked) else None)

    async def get(self, rid: UUID) -> dict[str, Any] | None:
        async with self._store.unit_of_work() as uow:
            return await uow.resources.resource(rid)
