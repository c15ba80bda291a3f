"""The matcher's use cases: apply one message's events in one transaction, propose introductions.

Everything a message causes (inbox row, contacts, interests, proposals, outbox rows) commits
together or not at all; the consumer acks only afterwards. A redelivered event finds its inbox
row and changes nothing.

`MatcherService` dispatches each kind of event; `LiveMatching` is live matching (declared
interests and newly reachable people introduced at once). `LiveMatching` depends only on the
store slices in `ports.py`, so it is unit-tested on in-memory fakes; its decisions are pure
(`live_planning.py`, `group_intros.py`, `availability.py`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar
from uuid import uuid4

from services.matcher import feedback, identity_resolution, metrics, withdrawals
from services.matcher.availability import within_cap
from services.matcher.clock import Clock, SystemClock
from services.matcher.constraints import Person, Rules, own_cap_fields
from services.matcher.group_intros import MIN_GROUP, topic_groups, worth_a_group
from services.matcher.live_planning import (
    NO_CANDIDATE,
    OVER_CAP,
    PROPOSED,
    LivePolicy,
    LiveView,
    pair_members,
    plan_pairs,
)
from services.matcher.preferences import apply_preferences
from services.matcher.scoring import (
    Choice,
    TopicStats,
    explain,
    pair_key,
    topic_stats,
    topic_value,
)
from services.matcher.store.rows import InterestRow, ProposalRow
from shared.events import (
    ContactErased,
    ContactOptedOut,
    ContactPreferencesChanged,
    ContactRef,
    ContactUpserted,
    DeliveryFailed,
    DeliverySucceeded,
    Envelope,
    ErasureData,
    EventBatch,
    InterestDeclared,
    InterestWithdrawn,
    IntroData,
    IntroFeedbackGiven,
    IntroProposed,
    IntroTopic,
    Participant,
    TopicRelation,
)
from shared.metrics import EVENTS_CONSUMED

if TYPE_CHECKING:
    from services.matcher.ports import LiveMatchingWork
    from services.matcher.store import MatcherStore, MatcherUnitOfWork

log = logging.getLogger("roac.matcher")

E = TypeVar("E", ContactUpserted, InterestDeclared)
G = TypeVar("G")


@dataclass(frozen=True)
class MatchingPolicy:
    min_score: float
    candidates_per_topic: int
    rules: Rules = field(default_factory=Rules)
    cooldown_days: int | None = None
    half_life_days: float = 365.0
    # Up to this many people sharing a rare topic meet as one group (below 3: never).
    group_max: int = 6
    # Sources whose identities merge with each other's (ROAC_IDENTITY_VERIFIED_SOURCES); any
    # other source's merge only with identities of the same source.
    verified_sources: frozenset[str] = frozenset()


class MatcherService:
    """Every event the matcher consumes, applied in one transaction per message (inbox first:
    a redelivered event changes nothing); declared interests and newly reachable people go to
    live matching (`LiveMatching`)."""

    def __init__(
        self, store: MatcherStore, policy: MatchingPolicy, clock: Clock | None = None
    ) -> None:
        self._store = store
        self._policy = policy
        self._live = LiveMatching(policy, clock)

    async def apply(self, batch: EventBatch) -> None:
        async with self._store.unit_of_work() as uow:
            new_ids = await uow.claim_new(e.message_id for e in batch.events)
            fresh = [e for e in batch.events if e.message_id in new_ids]
            duplicates = len(batch.events) - len(fresh)
            if duplicates:
                EVENTS_CONSUMED.labels("matcher", batch.type, "duplicate").inc(duplicates)
            if not fresh:
                return
            if batch.type == "contact.upserted.v1":
                contacts = [e for e in fresh if isinstance(e, ContactUpserted)]
                await self._apply_contacts(uow, await _without_erased(uow, contacts))
            elif batch.type == "interest.declared.v1":
                interests = [e for e in fresh if isinstance(e, InterestDeclared)]
                await self._live.declare_interests(uow, await _without_erased(uow, interests))
            elif batch.type == "interest.withdrawn.v1":
                await self._apply_withdrawals(
                    uow, [e for e in fresh if isinstance(e, InterestWithdrawn)]
                )
            elif batch.type in ("delivery.succeeded.v1", "delivery.failed.v1"):
                await self._apply_deliveries(uow, fresh)
            elif batch.type == "contact.opted_out.v1":
                await uow.contacts.opt_out(
                    [e.data for e in fresh if isinstance(e, ContactOptedOut)]
                )
            elif batch.type == "contact.preferences_changed.v1":
                await apply_preferences(
                    uow, [e for e in fresh if isinstance(e, ContactPreferencesChanged)]
                )
            elif batch.type == "intro.feedback_given.v1":
                await feedback.apply_given(
                    uow, [e for e in fresh if isinstance(e, IntroFeedbackGiven)]
                )
            elif batch.type == "contact.erased.v1":
                # Those the matcher published itself (a merged person's other identities, for
                # the notifier) were erased with the person: applied again, they would erase
                # an identity a later contact event brought back in the meantime.
                for erased in sorted(
                    (e for e in fresh if isinstance(e, ContactErased) and e.source != "matcher"),
                    key=lambda e: (e.data.source, e.data.external_id),
                ):
                    ref = (erased.data.source, erased.data.external_id)
                    others = await uow.erasure.erase(ref, erased.occurred_at) - {ref}
                    # The person's other identities (a merge): the notifier holds what it
                    # holds of them by the identity each introduction named, which need not
                    # be the one the erasure named. Each is erased there too, as of the same
                    # moment. (Back here, they are skipped: see above.)
                    await uow.enqueue(
                        [
                            ContactErased(
                                source="matcher",
                                occurred_at=erased.occurred_at,
                                data=ErasureData(source=source, external_id=external_id),
                                **erased.consequence(),
                            )
                            for source, external_id in sorted(others)
                        ]
                    )
            else:
                raise ValueError(f"the matcher does not handle {batch.type}")
        EVENTS_CONSUMED.labels("matcher", batch.type, "processed").inc(len(fresh))

    async def _apply_contacts(
        self, uow: MatcherUnitOfWork, events: Sequence[ContactUpserted]
    ) -> None:
        latest: dict[tuple[str, str], ContactUpserted] = {}
        for event in events:
            ref = (event.data.source, event.data.external_id)
            if ref not in latest or latest[ref].occurred_at <= event.occurred_at:
                latest[ref] = event
        if not latest:
            return
        applied = await identity_resolution.apply_contacts(
            uow, latest, self._policy.verified_sources
        )
        ids = applied.contacts
        became_reachable = set(applied.became_reachable)
        # A contact from a bulk import (Envelope.bulk) introduces nobody at once: it is stored,
        # and the next round (POST /v1/rounds) matches it. An import never floods people.
        became_reachable -= {ids[ref] for ref, event in latest.items() if event.bulk}
        if not became_reachable:
            return
        causes: dict[int, Envelope] = {ids[ref]: event for ref, event in latest.items()}
        await self._live.match_reachable(uow, became_reachable, causes)

    async def _apply_withdrawals(
        self, uow: MatcherUnitOfWork, events: Sequence[InterestWithdrawn]
    ) -> None:
        """Forget what each identity withdrew (services/matcher/withdrawals.py); the topic
        counts follow. Nothing is proposed: a withdrawal only takes away."""
        latest = withdrawals.latest_withdrawals(events)
        known = await uow.identities.known((k[0], k[1]) for k in latest)
        rows = withdrawals.withdrawal_rows(latest, known)
        if not rows:
            return
        await uow.topics.record_withdrawals(rows)
        topic_ids = await uow.topics.topic_ids(sorted({r.topic for r in rows}))
        await uow.topics.lock_topics(topic_ids.values())
        removed = await uow.topics.withdraw_interests(rows, topic_ids)
        if removed:
            still_held = await uow.topics.known_contact_topics(removed)
            await uow.topics.drop_topic_people(withdrawals.topic_decrements(removed, still_held))

    async def _apply_deliveries(self, uow: MatcherUnitOfWork, events: Sequence[object]) -> None:
        outcomes = []
        for event in events:
            if isinstance(event, DeliverySucceeded):
                outcomes.append((event.data.proposal_id, event.data.recipient, "delivered"))
            elif isinstance(event, DeliveryFailed) and event.data.permanent:
                outcomes.append((event.data.proposal_id, event.data.recipient, "failed"))
        if outcomes:
            await uow.proposals.record_deliveries(outcomes)


class LiveMatching:
    """Live matching's use case, around the pure decisions (`live_planning.plan_pairs`,
    `group_intros`, `availability.within_cap`): read what they need, ask them, lock and
    re-check, write the proposals and their `intro.proposed.v1` events. It sees its unit of
    work only through the store slices it uses (`ports.LiveMatchingWork`), so its unit tests
    run it on an in-memory fake (tests/unit/test_live_matching.py)."""

    def __init__(self, policy: MatchingPolicy, clock: Clock | None = None) -> None:
        self._policy = policy
        self._live = LivePolicy(policy.rules, policy.min_score, policy.half_life_days)
        # Whose pause has ended is read on it (the weekly counts are the database's own now()).
        self._clock: Clock = clock or SystemClock()

    async def declare_interests(
        self, uow: LiveMatchingWork, events: Sequence[InterestDeclared]
    ) -> None:
        """Store the newest of each declared interest (unless the identity withdrew it since),
        count the topics' new holders, then introduce: a handful sharing a rare topic as a
        group, everyone else with a new topic to their best partner. A bulk import's
        interests are stored only (the next round matches them)."""
        latest: dict[tuple[str, str, str, str], InterestDeclared] = {}
        for event in events:
            d = event.data
            key = (d.source, d.external_id, d.topic, d.kind.value)
            if key not in latest or latest[key].occurred_at <= event.occurred_at:
                latest[key] = event
        if not latest:
            return
        resolved = await uow.identities.resolve((k[0], k[1]) for k in latest)
        ids = {ref: r.contact_id for ref, r in resolved.items()}
        topic_ids = await uow.topics.upsert_topics(k[2] for k in latest)
        await uow.topics.lock_topics(topic_ids.values())
        # Under the topic locks, so a withdrawal committed meanwhile is seen: a declaration
        # older than the identity's withdrawal of it (applied first) brings nothing back.
        stale = await uow.topics.withdrawn_declarations(
            [
                (resolved[(d.source, d.external_id)].identity_id, d.topic, d.kind, e.occurred_at)
                for e in latest.values()
                for d in (e.data,)
            ]
        )
        if stale:
            latest = {
                key: e
                for key, e in latest.items()
                if (resolved[(key[0], key[1])].identity_id, e.data.topic, e.data.kind) not in stale
            }
            if not latest:
                return
        rows = [
            InterestRow(
                contact_id=found.contact_id,
                topic_id=topic_ids[d.topic],
                kind=d.kind,
                weight=d.weight,
                declared_at=event.occurred_at,
                identity_id=found.identity_id,
            )
            for event in latest.values()
            for d in (event.data,)
            for found in (resolved[(d.source, d.external_id)],)
        ]
        known = await uow.topics.known_contact_topics((r.contact_id, r.topic_id) for r in rows)
        added = await uow.topics.upsert_interests(rows)
        increments: dict[int, int] = {}
        for _contact_id, topic_id in {(a[0], a[1]) for a in added} - known:
            increments[topic_id] = increments.get(topic_id, 0) + 1
        await uow.topics.add_topic_people(increments)
        # Interests from a bulk import (Envelope.bulk) are applied above but trigger no live
        # or group introduction: the next round matches them. An import never floods people.
        # (One message is one ingest request, so its events share the flag.)
        if any(event.bulk for event in latest.values()):
            return

        seeds: dict[int, set[int]] = {}
        for contact_id, topic_id, _kind in added:
            seeds.setdefault(contact_id, set()).add(topic_id)
        causes: dict[int, Envelope] = {}
        for event in latest.values():
            causes.setdefault(ids[(event.data.source, event.data.external_id)], event)
        if self._policy.group_max >= MIN_GROUP and increments:
            grouped = await self._propose_topic_groups(uow, set(increments), causes)
            # Whoever met their topic's group does not also look for a pair on that topic.
            for topic_id, members in grouped:
                for member in members:
                    seeds.get(member, set()).discard(topic_id)
            seeds = {p: topics for p, topics in seeds.items() if topics}
        await self._propose(uow, seeds, causes)

    async def match_reachable(
        self, uow: LiveMatchingWork, contact_ids: set[int], causes: dict[int, Envelope]
    ) -> None:
        """People who just became reachable: the interests they declared before their contact
        details arrived can match now (`causes`: the event behind each person)."""
        seeds = await uow.topics.topics_of(contact_ids)
        await uow.topics.lock_topics(t for topics in seeds.values() for t in topics)
        await self._propose(uow, seeds, causes)

    async def _propose_topic_groups(
        self, uow: LiveMatchingWork, topic_ids: set[int], causes: dict[int, Envelope]
    ) -> list[tuple[int, tuple[int, ...]]]:
        """One introduction for the handful of people who share a rare topic (group_intros)."""
        holders = await uow.topics.rare_topic_holders(topic_ids, self._policy.group_max)
        holders = {t: m for t, m in holders.items() if len(m) >= MIN_GROUP}
        if not holders:
            return []
        now = self._clock.now()
        people = await self._people(uow, {m for members in holders.values() for m in members})
        groups = topic_groups(holders, people, now, self._policy.rules, self._policy.group_max)
        if not groups:
            return []
        kept = await self._within_cap(uow, groups, _group_members, now)
        if not kept:
            return []
        stats = topic_stats(await uow.topics.counts(t for t, _ in kept))
        population = await uow.contacts.population()
        kept = worth_a_group(kept, stats, population, self._policy.min_score)
        if not kept:
            return []
        details = await uow.contacts.participants(m for _, members in kept for m in members)
        rows, events = [], {}
        for topic_id, members in kept:
            cause = next(causes[m] for m in members if m in causes)
            event = _group_event(members, details, stats[topic_id], population, cause)
            rows.append(_proposal_row(event, members))
            events[event.data.proposal_id] = (topic_id, members, event)
        inserted = await uow.proposals.insert_proposals(rows, self._policy.cooldown_days)
        await uow.enqueue([events[i][2] for i in sorted(inserted)])
        metrics.PROPOSALS.labels("group").inc(len(inserted))
        return [(events[i][0], events[i][1]) for i in inserted]

    async def _propose(
        self,
        uow: LiveMatchingWork,
        seeds: dict[int, set[int]],
        causes: dict[int, Envelope],
    ) -> None:
        """For each person with new topics, propose the best partner not yet introduced to them:
        read (`_view`), decide (`live_planning.plan_pairs`), re-check under the row locks,
        write."""
        reachable = await uow.contacts.reachable(seeds)
        if not reachable:
            return
        candidates = await uow.topics.candidates(
            ((p, t) for p in reachable for t in seeds[p]), self._policy.candidates_per_topic
        )
        if not candidates:
            metrics.MATCH_ATTEMPTS.labels(NO_CANDIDATE).inc(len(reachable))
            return
        now = self._clock.now()
        view = await self._view(uow, candidates)
        plan = plan_pairs(view, self._live, now)
        for _person, outcome in plan.skipped:
            metrics.MATCH_ATTEMPTS.labels(outcome).inc()
        chosen = await self._within_cap(uow, plan.pairs, pair_members, now)
        if len(chosen) < len(plan.pairs):
            metrics.MATCH_ATTEMPTS.labels(OVER_CAP).inc(len(plan.pairs) - len(chosen))
        if not chosen:
            return

        details = await uow.contacts.participants(
            {p for pair in chosen for p in pair_members(pair)}
        )
        proposals: list[ProposalRow] = []
        events: dict[str, IntroProposed] = {}
        for person, choice in chosen:
            event = _intro_event(person, choice, details, view.stats, causes[person])
            row = _proposal_row(event, (person, choice.partner_id), score=choice.pair.score)
            proposals.append(row)
            events[row.group_key] = event
        inserted = await uow.proposals.insert_proposals(proposals, self._policy.cooldown_days)
        published = [e for e in events.values() if e.data.proposal_id in inserted]
        await uow.enqueue(published)
        metrics.MATCH_ATTEMPTS.labels(PROPOSED).inc(len(published))
        metrics.PROPOSALS.labels("live").inc(len(published))

    async def _view(self, uow: LiveMatchingWork, candidates: dict[int, set[int]]) -> LiveView:
        """What live matching decides on, read without locks."""
        everyone_considered = {c for cs in candidates.values() for c in cs}
        own_interests = await uow.topics.interests_of(candidates.keys())
        own_topics = {i.topic_id for interests in own_interests.values() for i in interests}
        their_interests = await uow.topics.interests_of(everyone_considered, own_topics)
        stats = topic_stats(await uow.topics.counts(own_topics))
        population = await uow.contacts.population()
        people = await self._people(uow, set(candidates) | everyone_considered)
        return LiveView(candidates, own_interests, their_interests, stats, population, people)

    async def _people(self, uow: LiveMatchingWork, ids: set[int]) -> dict[int, Person]:
        """What the rules need to know about each of these contacts."""
        profiles = await uow.contacts.constraint_profiles(ids)
        recent = await uow.contacts.recent_intro_counts(ids)
        # Their own caps (preferences page): a partner at theirs is not chosen, so the seeker
        # gets the next one who fits rather than nobody at the locked re-check (`_within_cap`).
        caps = await uow.contacts.own_caps(ids)
        blocks = await uow.contacts.blocks_of(ids)
        met = await uow.proposals.partners_met(ids, self._policy.cooldown_days)
        return {
            i: Person(
                id=i,
                organization=profile[0],
                timezone=profile[1],
                snoozed_until=profile[2],
                opted_out=profile[3],
                recent_intros=recent.get(i, 0),
                blocked=frozenset(blocks.get(i, ())),
                met=frozenset(met.get(i, ())),
                **own_cap_fields(caps.get(i)),
            )
            for i, profile in profiles.items()
        }

    async def _within_cap(
        self,
        uow: LiveMatchingWork,
        chosen: Sequence[G],
        members: Callable[[G], Sequence[int]],
        now: datetime,
    ) -> list[G]:
        """Re-check the chosen groups under their members' row locks: what another matcher
        committed meanwhile counts, so the cap holds however many matchers run."""
        if not chosen:
            return []
        locked = await uow.contacts.lock_availability(p for g in chosen for p in members(g))
        return within_cap(chosen, members, locked, now, self._policy.rules.cap_per_week)


def _group_event(
    members: tuple[int, ...],
    details: dict[int, Participant],
    stats: TopicStats,
    population: int,
    cause: Envelope,
) -> IntroProposed:
    pairs = len(members) * (len(members) - 1) // 2
    return IntroProposed(
        source="matcher",
        **cause.consequence(),
        data=IntroData(
            proposal_id=uuid4(),
            participants=[details[m] for m in members],
            topics=[IntroTopic(topic=stats.name, relation=TopicRelation.SHARED)],
            score=round(topic_value(stats, population) * pairs, 4),
            reason=f"You all care about {stats.name}, and nobody else here does yet.",
            triggered_at=cause.occurred_at,
        ),
    )


def _proposal_row(
    event: IntroProposed, members: tuple[int, ...], score: float | None = None
) -> ProposalRow:
    """The stored proposal of an `intro.proposed.v1` (`score`: unrounded, when known)."""
    return ProposalRow(
        id=event.data.proposal_id,
        group_key=pair_key(*members),
        contact_ids=members,
        score=event.data.score if score is None else score,
        reason=event.data.reason,
        topics=[t.model_dump(mode="json") for t in event.data.topics],
        correlation_id=event.correlation_id,
    )


def _group_members(group: tuple[int, tuple[int, ...]]) -> tuple[int, ...]:
    return group[1]


def _intro_event(
    person: int,
    choice: Choice,
    details: dict[int, Participant],
    stats: Mapping[int, TopicStats],
    cause: Envelope,
) -> IntroProposed:
    first, second = details[person], details[choice.partner_id]
    topics = []
    for match in choice.pair.topics:
        seeker = offerer = None
        if match.relation is TopicRelation.SEEKS_OFFERS:
            seeker, offerer = (first, second) if match.first_seeks else (second, first)
        topics.append(
            IntroTopic(
                topic=stats[match.topic_id].name,
                relation=match.relation,
                seeker=_ref(seeker) if seeker else None,
                offerer=_ref(offerer) if offerer else None,
            )
        )
    return IntroProposed(
        source="matcher",
        **cause.consequence(),
        data=IntroData(
            proposal_id=uuid4(),
            participants=[first, second],
            topics=topics,
            score=round(choice.pair.score, 4),
            reason=explain(choice.pair, stats),
            triggered_at=cause.occurred_at,
        ),
    )


async def _without_erased(uow: MatcherUnitOfWork, events: list[E]) -> list[E]:
    """Drop contact and interest events of people erased after the event occurred (it raced
    the erasure), and such people from block lists: nothing brings an erased person back."""
    refs = [((e.data.source, e.data.external_id), e.occurred_at) for e in events]
    refs += [((b.source, b.external_id), e.occurred_at) for e in events for b in _blocks(e)]
    erased = await uow.erasure.erased_refs(refs)
    if not erased:
        return events
    kept: list[E] = []
    for event in events:
        if (event.data.source, event.data.external_id) in erased:
            log.info("dropped %s of an erased person", event.type)
        elif any((b.source, b.external_id) in erased for b in _blocks(event)):
            blocks = [b for b in _blocks(event) if (b.source, b.external_id) not in erased]
            data = event.data.model_copy(update={"blocks": blocks})
            kept.append(event.model_copy(update={"data": data}))
        else:
            kept.append(event)
    return kept


def _blocks(event: ContactUpserted | InterestDeclared) -> list[ContactRef]:
    return event.data.blocks if isinstance(event, ContactUpserted) else []


def _ref(participant: Participant) -> ContactRef:
    return ContactRef(source=participant.source, external_id=participant.external_id)
