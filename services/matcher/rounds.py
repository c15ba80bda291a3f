"""Rounds and pools, the use cases: request a round, run it, report it.

A round is a row in `matcher.rounds`, so it survives restarts and any matcher process can run
it: a worker claims it with a lease (SKIP LOCKED), plans it on a repeatable-read snapshot (in a
thread, so the event loop keeps consuming), then writes every proposal, its outbox event and
the round's statistics in one transaction, after re-checking each member under a row lock
(another matcher may have used someone's weekly cap meanwhile). A worker that dies mid-round
leaves no partial round: the lease runs out and another worker plans it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

from pydantic_core import to_json

from services.matcher import metrics
from services.matcher.availability import within_cap
from services.matcher.clock import Clock, SystemClock
from services.matcher.constraints import Person, Rules, own_cap_fields
from services.matcher.round_planning import (
    GroupTopic,
    PlannedGroup,
    RoundParams,
    RoundPlan,
    plan_round,
)
from services.matcher.schedules import (
    Schedule,
    WeeklySchedule,
    anchored,
    first_round_at,
    round_after,
    schedule_from_json,
)
from services.matcher.scoring import decayed, pair_key, topic_stats
from services.matcher.store.rows import PoolRow, ProposalRow, RoundRow, ScheduledRound
from shared.outbox import EncodedEvent

if TYPE_CHECKING:
    from services.matcher.store import MatcherStore, MatcherUnitOfWork

log = logging.getLogger("roac.matcher.rounds")
SELECTOR_KEYS = ("tags", "sources", "organizations")


class PoolNotFound(LookupError):
    pass


class InvalidPool(ValueError):
    pass


@dataclass(frozen=True)
class RoundPolicy:
    top_k: int = 10
    per_topic: int = 30
    cap_per_week: int = 2
    cooldown_days: int | None = None
    half_life_days: float = 365.0
    lease_seconds: float = 600.0
    poll_seconds: float = 1.0


@dataclass(frozen=True)
class PoolSpec:
    name: str
    selector: dict[str, list[str]] = field(default_factory=dict)
    group_size: int = 2
    serendipity: float = 0.0
    rules: dict[str, str] = field(default_factory=dict)
    every_seconds: int | None = None
    schedule: Schedule | None = None
    checkin_after_days: int | None = None


def rules_of(pool_rules: dict[str, str], cap_per_week: int) -> Rules:
    try:
        return Rules.from_mapping(cap_per_week, pool_rules)
    except ValueError as exc:
        raise InvalidPool(str(exc)) from exc


def schedule_of(pool: PoolRow) -> Schedule | None:
    return schedule_from_json(pool.schedule) if pool.schedule else None


class Rounds:
    def __init__(
        self, store: MatcherStore, policy: RoundPolicy, clock: Clock | None = None
    ) -> None:
        self._store = store
        self._policy = policy
        self._clock: Clock = clock or SystemClock()
        self._worker = uuid4()

    async def save_pool(self, spec: PoolSpec) -> tuple[PoolRow, bool]:
        """Create or replace a pool. A new schedule's first round is due at its first slot
        after now (an interval's: at once); replacing a pool with the same schedule keeps the
        round already due and the weeks counted."""
        unknown = set(spec.selector) - set(SELECTOR_KEYS)
        if unknown:
            raise InvalidPool(f"unknown selector keys: {', '.join(sorted(unknown))}")
        if spec.schedule is not None and spec.every_seconds is not None:
            raise InvalidPool("a pool has every_seconds or a schedule, not both")
        rules_of(spec.rules, self._policy.cap_per_week)  # validates names and levels
        now = self._clock.now()
        async with self._store.unit_of_work() as uow:
            old = await uow.rounds.pool_for_update(spec.name)
            if old is not None and _same_schedule(old, spec):
                schedule, next_round_at = schedule_of(old), old.next_round_at
            else:
                schedule = anchored(spec.schedule, now) if spec.schedule else None
                next_round_at = first_round_at(spec.every_seconds, schedule, now)
            return await uow.rounds.upsert_pool(
                PoolRow(
                    spec.name,
                    spec.selector,
                    spec.group_size,
                    spec.serendipity,
                    spec.rules,
                    spec.every_seconds,
                    next_round_at=next_round_at,
                    schedule=schedule.to_json() if schedule else None,
                    checkin_after_days=spec.checkin_after_days,
                )
            )

    async def schedule_due(self, seed: int | None = None) -> int:
        """Request a round for each pool whose schedule is due now, and move each schedule on
        to its next slot; how many were requested. `seed`: the same for each (tests)."""
        now = self._clock.now()
        async with self._store.unit_of_work() as uow:
            due = await uow.rounds.due_pools(now)
            return await uow.rounds.request_scheduled(
                [
                    ScheduledRound(
                        pool,
                        seed if seed is not None else random.randrange(2**31),
                        round_after(
                            pool.every_seconds,
                            schedule_of(pool),
                            pool.next_round_at or now,
                            now,
                        ),
                    )
                    for pool in due
                ]
            )

    async def pools(self) -> list[PoolRow]:
        async with self._store.unit_of_work() as uow:
            return await uow.rounds.pools()

    async def request(
        self,
        pool_name: str,
        *,
        group_size: int | None = None,
        seed: int | None = None,
        serendipity: float | None = None,
        dry_run: bool = False,
    ) -> RoundRow:
        async with self._store.unit_of_work() as uow:
            pool = await uow.rounds.pool(pool_name)
            if pool is None:
                raise PoolNotFound(pool_name)
            return await uow.rounds.create_round(
                uuid4(),
                pool,
                group_size or pool.group_size,
                seed if seed is not None else random.randrange(2**31),
                serendipity if serendipity is not None else pool.serendipity,
                dry_run,
            )

    async def get(self, round_id: UUID) -> RoundRow | None:
        async with self._store.unit_of_work() as uow:
            return await uow.rounds.round(round_id)

    async def feedback(self, round_id: UUID) -> dict[str, Any]:
        async with self._store.unit_of_work() as uow:
            return await uow.rounds.round_feedback(round_id)

    async def proposals(
        self, round_id: UUID, limit: int, after: UUID | None
    ) -> list[dict[str, Any]]:
        async with self._store.unit_of_work() as uow:
            return await uow.rounds.round_proposals(round_id, limit, after)

    async def run_forever(self) -> None:
        """The worker loop every matcher runs: scheduled rounds, then waiting rounds."""
        while True:
            try:
                await self.schedule_due()
                while await self.run_next():
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("round worker failed; retrying")
            await asyncio.sleep(self._policy.poll_seconds)

    async def run_next(self) -> bool:
        """Claim and run one round; False when none was waiting."""
        async with self._store.unit_of_work() as uow:
            claimed = await uow.rounds.claim_round(self._worker, self._policy.lease_seconds)
        if claimed is None:
            return False
        started = time.perf_counter()
        try:
            await self._run(claimed, started)
        except Exception as exc:
            log.exception("round %s failed", claimed.id)
            metrics.ROUNDS.labels("failed").inc()
            with contextlib.suppress(Exception):
                async with self._store.unit_of_work() as uow:
                    if await uow.rounds.hold_round(claimed.id, self._worker):
                        await uow.rounds.finish_round(
                            claimed.id, "failed", None, None, f"{type(exc).__name__}: {exc}"
                        )
        return True

    async def _run(self, claimed: RoundRow, started: float) -> None:
        now = self._clock.now()
        async with self._store.snapshot() as uow:
            pool = await uow.rounds.pool(claimed.pool)
            if pool is None:
                raise PoolNotFound(claimed.pool)
            rules = rules_of(pool.rules, self._policy.cap_per_week)
            people, last_introduced = await self._members(uow, pool)
            interests = await uow.topics.interests_of(people)
            topics = topic_stats(await uow.topics.counts_held_by(list(people)))
            population = await uow.contacts.population()
        loaded = time.perf_counter()
        params = RoundParams(
            group_size=claimed.group_size,
            serendipity=claimed.serendipity,
            seed=claimed.seed,
            top_k=self._policy.top_k,
            per_topic=self._policy.per_topic,
        )
        half_life = self._policy.half_life_days

        def planned_round() -> RoundPlan:
            with paused_gc():
                return plan_round(
                    people,
                    {p: decayed(i, now, half_life) for p, i in interests.items()},
                    topics,
                    population,
                    last_introduced,
                    rules,
                    params,
                    now,
                )

        plan = await asyncio.to_thread(planned_round)
        planned = time.perf_counter()
        async with self._store.unit_of_work() as uow:
            if not await uow.rounds.hold_round(claimed.id, self._worker):
                log.warning("round %s was taken over by another worker", claimed.id)
                return
            if claimed.dry_run:
                written, plan_json = 0, await self._plan_json(uow, plan)
            else:
                checkin_after = pool.checkin_after_days * 86400 if pool.checkin_after_days else None
                written = await self._propose(uow, claimed, plan, rules, now, checkin_after)
                plan_json = None
            stats = dict(plan.stats)
            stats["proposed"] = written
            stats["skipped_at_write"] = len(plan.groups) - written if not claimed.dry_run else 0
            stats["unplaced_sample"] = await self._unplaced_sample(uow, plan)
            stats["seconds"] = {
                "load": round(loaded - started, 3),
                "plan": round(planned - loaded, 3),
                "write": round(time.perf_counter() - planned, 3),
                "total": round(time.perf_counter() - started, 3),
            }
            await uow.rounds.finish_round(claimed.id, "done", stats, plan_json)
        metrics.ROUNDS.labels("done").inc()
        metrics.ROUND_SECONDS.observe(time.perf_counter() - started)
        if not claimed.dry_run:
            metrics.ROUND_GROUPS.inc(written)
            metrics.ROUND_PEOPLE.labels("placed").inc(plan.stats["placed"])
            metrics.ROUND_PEOPLE.labels("unplaced").inc(plan.stats["unplaced"])
            metrics.LAST_ROUND_COVERAGE.set(plan.stats["coverage"])
            metrics.LAST_ROUND_GROUPS.set(written)
        log.info(
            "round %s done: %d groups, coverage %.3f, %.1fs",
            claimed.id,
            len(plan.groups),
            plan.stats["coverage"],
            time.perf_counter() - started,
        )

    async def _members(
        self, uow: MatcherUnitOfWork, pool: PoolRow
    ) -> tuple[dict[int, Person], dict[int, datetime | None]]:
        members = await uow.contacts.pool_members(pool.selector)
        ids = [m.id for m in members]
        recent = await uow.contacts.recent_intro_counts(ids)
        # Their own caps (preferences page): planned within them, not only re-checked.
        caps = await uow.contacts.own_caps(ids)
        blocks = await uow.contacts.blocks_of(ids)
        met = await uow.proposals.partners_met(ids, self._policy.cooldown_days)
        people = {
            m.id: Person(
                id=m.id,
                organization=m.organization,
                timezone=m.timezone,
                snoozed_until=m.snoozed_until,
                opted_out=m.opted_out,
                deliverable=m.deliverable,
                recent_intros=recent.get(m.id, 0),
                blocked=frozenset(blocks.get(m.id, ())),
                met=frozenset(met.get(m.id, ())),
                **own_cap_fields(caps.get(m.id)),
            )
            for m in members
        }
        return people, {m.id: m.last_introduced_at for m in members}

    async def _propose(
        self,
        uow: MatcherUnitOfWork,
        claimed: RoundRow,
        plan: RoundPlan,
        rules: Rules,
        now: datetime,
        checkin_after_seconds: int | None = None,
    ) -> int:
        """Write the planned groups that still hold under the members' row locks."""
        clock = time.perf_counter()
        phases: dict[str, float] = {}

        def lap(name: str) -> None:
            nonlocal clock
            now_ = time.perf_counter()
            phases[name] = round(now_ - clock, 3)
            clock = now_

        locked = await uow.contacts.lock_availability(p for g in plan.groups for p in g.members)
        lap("lock")
        kept = within_cap(plan.groups, _members, locked, now, rules.cap_per_week)
        details = await uow.contacts.participant_rows(p for g in kept for p in g.members)
        lap("details")
        correlation = f"round-{claimed.id}"
        with paused_gc():
            rows, encoded = _proposal_rows(
                kept, details, claimed.id, correlation, now, checkin_after_seconds
            )
        lap("events")
        inserted = await uow.proposals.insert_proposals(rows, self._policy.cooldown_days)
        lap("proposals")
        await uow.enqueue_encoded([encoded[i] for i in sorted(inserted)])
        lap("outbox")
        log.info("round %s write phases: %s", claimed.id, phases)
        metrics.PROPOSALS.labels("round").inc(len(inserted))
        return len(inserted)

    async def _plan_json(self, uow: MatcherUnitOfWork, plan: RoundPlan) -> list[dict[str, Any]]:
        details = await uow.contacts.participants(p for g in plan.groups for p in g.members)
        return [
            {
                "participants": [
                    {"source": details[p].source, "external_id": details[p].external_id}
                    for p in g.members
                ],
                "score": round(g.score, 4),
                "reason": g.reason,
                "topics": [t.topic for t in g.topics],
            }
            for g in plan.groups
            # A member erased while the round ran is gone: so is the group they were in.
            if all(p in details for p in g.members)
        ]

    async def _unplaced_sample(
        self, uow: MatcherUnitOfWork, plan: RoundPlan, limit: int = 100
    ) -> list[dict[str, str]]:
        sample = plan.unplaced[:limit]
        details = await uow.contacts.participants(p for p, _ in sample)
        return [
            {"source": details[p].source, "external_id": details[p].external_id, "reason": why}
            for p, why in sample
            if p in details  # erased while the round ran
        ]


def _same_schedule(old: PoolRow, spec: PoolSpec) -> bool:
    """Whether `spec` keeps the pool's schedule (a schedule without `starting` keeps the
    stored one: its weeks are still counted from there)."""
    if old.every_seconds != spec.every_seconds:
        return False
    stored = schedule_of(old)
    if stored is None or spec.schedule is None:
        return stored is None and spec.schedule is None
    wanted = spec.schedule
    if (
        isinstance(wanted, WeeklySchedule)
        and isinstance(stored, WeeklySchedule)
        and wanted.starting is None
    ):
        wanted = dataclasses.replace(wanted, starting=stored.starting)
    return wanted == stored


def _members(group: PlannedGroup) -> tuple[int, ...]:
    return group.members


def _proposal_rows(
    kept: list[PlannedGroup],
    details: dict[int, dict[str, Any]],
    round_id: UUID,
    correlation: str,
    now: datetime,
    checkin_after_seconds: int | None = None,
) -> tuple[list[ProposalRow], dict[UUID, EncodedEvent]]:
    rows: list[ProposalRow] = []
    encoded: dict[UUID, EncodedEvent] = {}
    stamp = now.isoformat()
    for group in kept:
        proposal_id = uuid4()
        topics = [_topic_json(t, details) for t in group.topics] or [
            {"topic": "a shared round", "relation": "shared", "seeker": None, "offerer": None}
        ]
        rows.append(
            ProposalRow(
                id=proposal_id,
                group_key=pair_key(*group.members),
                contact_ids=group.members,
                score=group.score,
                reason=group.reason,
                topics=topics,
                correlation_id=correlation,
                round_id=round_id,
            )
        )
        encoded[proposal_id] = intro_event_body(
            proposal_id,
            group,
            [details[p] for p in group.members],
            topics,
            round_id,
            correlation,
            stamp,
            checkin_after_seconds,
        )
    return rows, encoded


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic garbage collection while a round allocates millions of short-lived, acyclic
    objects: the collector's passes over them cost a large share of the time. Nothing
    collectable is lost, only collected later."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _topic_json(topic: GroupTopic, details: dict[int, dict[str, Any]]) -> dict[str, Any]:
    def ref(contact_id: int | None) -> dict[str, str] | None:
        if contact_id is None:
            return None
        return {
            "source": details[contact_id]["source"],
            "external_id": details[contact_id]["external_id"],
        }

    return {
        "topic": topic.topic,
        "relation": topic.relation.value,
        "seeker": ref(topic.seeker),
        "offerer": ref(topic.offerer),
    }


def intro_event_body(
    proposal_id: UUID,
    group: PlannedGroup,
    participants: list[dict[str, Any]],
    topics: list[dict[str, Any]],
    round_id: UUID,
    correlation_id: str,
    stamp: str,
    checkin_after_seconds: int | None = None,
) -> EncodedEvent:
    """A round's `intro.proposed.v1`, serialised straight from rows this store wrote from
    validated events: building 50,000 pydantic events cost more than planning the round.
    `tests/unit/test_round_events.py` decodes it with the schema in shared/events.py."""
    message_id = uuid4()
    envelope = {
        "message_id": str(message_id),
        "occurred_at": stamp,
        "source": "matcher",
        "correlation_id": correlation_id,
        "causation_id": None,
        "integration": None,
        "type": "intro.proposed.v1",
        "data": {
            "proposal_id": str(proposal_id),
            "mode": None,
            "participants": participants,
            "topics": topics,
            "score": round(group.score, 4),
            "reason": group.reason,
            "triggered_at": stamp,
            "round_id": str(round_id),
            # The pool's "did you meet?" delay; None: the notifier's default.
            "checkin_after_seconds": checkin_after_seconds,
        },
    }
    # pydantic-core's serialiser: five times faster than json.dumps on these dicts.
    return EncodedEvent(message_id, "intro.proposed.v1", correlation_id, to_json(envelope))
