"""Every constraint of a live (event-triggered) introduction, against the real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.matcher.constraints import Rules
from services.matcher.service import MatcherService, MatchingPolicy
from services.matcher.store import MatcherStore
from shared.events import (
    ContactData,
    ContactRef,
    ContactUpserted,
    EventBatch,
    InterestData,
    InterestDeclared,
)
from tests.integration.test_matcher_service import proposals_for


@pytest.fixture
def matcher(pool: asyncpg.Pool) -> MatcherService:
    return MatcherService(
        MatcherStore(pool), MatchingPolicy(min_score=0.5, candidates_per_topic=50)
    )


def person(
    run: str,
    i: int,
    *,
    organization: str | None = None,
    snoozed_until: datetime | None = None,
    blocks: tuple[int, ...] = (),
    tags: tuple[str, ...] = (),
    timezone: str | None = None,
) -> ContactUpserted:
    return ContactUpserted(
        source="ingest",
        correlation_id=f"c-{run}",
        data=ContactData(
            source="t",
            external_id=f"{run}-{i}",
            name=f"Person {i}",
            email=f"p{i}.{run}@example.org",
            organization=organization,
            timezone=timezone,
            snoozed_until=snoozed_until,
            blocks=[ContactRef(source="t", external_id=f"{run}-{b}") for b in blocks],
            tags=list(tags),
        ),
    )


def likes(run: str, i: int, topic: str, kind: str = "likes") -> InterestDeclared:
    return InterestDeclared(
        source="ingest",
        correlation_id=f"c-{run}",
        data=InterestData(source="t", external_id=f"{run}-{i}", topic=topic, kind=kind),
    )


def _run() -> str:
    return uuid.uuid4().hex[:8]


async def test_nobody_gets_more_than_the_weekly_cap(
    matcher: MatcherService, pool: asyncpg.Pool
) -> None:
    run = _run()
    await matcher.apply(EventBatch(events=[person(run, i) for i in range(5)]))
    # Person 0 shares a different rare topic with each of four people.
    for i in range(1, 5):
        await matcher.apply(EventBatch(events=[likes(run, i, f"topic {i} {run}")]))
        await matcher.apply(EventBatch(events=[likes(run, 0, f"topic {i} {run}")]))
    involving_0 = [f for f in await proposals_for(pool, run) if f"{run}-0" in f["ids"]]
    assert len(involving_0) == 2


async def test_a_snoozed_person_waits_and_an_expired_snooze_does_not(
    matcher: MatcherService, pool: asyncpg.Pool
) -> None:
    run = _run()
    later = datetime.now(UTC) + timedelta(days=3)
    earlier = datetime.now(UTC) - timedelta(days=1)
    await matcher.apply(
        EventBatch(
            events=[
                person(run, 0, snoozed_until=later),
                person(run, 1),
                person(run, 2, snoozed_until=earlier),
            ]
        )
    )
    await matcher.apply(EventBatch(events=[likes(run, 0, f"snooze {run}")]))
    await matcher.apply(EventBatch(events=[likes(run, 1, f"snooze {run}")]))
    await matcher.apply(EventBatch(events=[likes(run, 2, f"snooze {run}")]))
    assert [f["ids"] for f in await proposals_for(pool, run)] == [[f"{run}-1", f"{run}-2"]]


async def test_a_block_works_in_both_directions(
    matcher: MatcherService, pool: asyncpg.Pool
) -> None:
    run = _run()
    await matcher.apply(EventBatch(events=[person(run, 0, blocks=(1,)), person(run, 1)]))
    await matcher.apply(EventBatch(events=[likes(run, 0, f"block {run}")]))
    await matcher.apply(EventBatch(events=[likes(run, 1, f"block {run}")]))
    assert await proposals_for(pool, run) == []
    # Lifting the block (a contact update without it) lets a later interest match.
    await matcher.apply(EventBatch(events=[person(run, 0)]))
    await matcher.apply(EventBatch(events=[likes(run, 1, f"second {run}")]))
    await matcher.apply(EventBatch(events=[likes(run, 0, f"second {run}")]))
    assert [f["ids"] for f in await proposals_for(pool, run)] == [[f"{run}-0", f"{run}-1"]]


async def test_colleagues_are_not_introduced_to_each_other(
    matcher: MatcherService, pool: asyncpg.Pool
) -> None:
    run = _run()
    await matcher.apply(
        EventBatch(
            events=[
                person(run, 0, organization="Acme"),
                person(run, 1, organization=" acme "),
                person(run, 2, organization="Globex"),
            ]
        )
    )
    for i in range(3):
        await matcher.apply(EventBatch(events=[likes(run, i, f"org {run}")]))
    pairs = [f["ids"] for f in await proposals_for(pool, run)]
    assert [f"{run}-0", f"{run}-1"] not in pairs
    assert pairs  # each Acme person may meet the Globex one


async def test_a_preferred_rule_allows_what_a_required_one_forbids(pool: asyncpg.Pool) -> None:
    run = _run()
    relaxed = MatcherService(
        MatcherStore(pool),
        MatchingPolicy(
            min_score=0.5,
            candidates_per_topic=50,
            rules=Rules.from_mapping(2, {"different_organization": "off"}),
        ),
    )
    await relaxed.apply(
        EventBatch(
            events=[person(run, 0, organization="Acme"), person(run, 1, organization="Acme")]
        )
    )
    await relaxed.apply(EventBatch(events=[likes(run, 0, f"same org {run}")]))
    await relaxed.apply(EventBatch(events=[likes(run, 1, f"same org {run}")]))
    assert len(await proposals_for(pool, run)) == 1


async def test_a_cooldown_allows_the_same_pair_again_only_after_it(pool: asyncpg.Pool) -> None:
    run = _run()
    service = MatcherService(
        MatcherStore(pool),
        MatchingPolicy(min_score=0.5, candidates_per_topic=50, cooldown_days=30),
    )
    await service.apply(EventBatch(events=[person(run, 0), person(run, 1)]))
    await service.apply(EventBatch(events=[likes(run, 0, f"a {run}"), likes(run, 1, f"a {run}")]))
    await service.apply(EventBatch(events=[likes(run, 0, f"b {run}"), likes(run, 1, f"b {run}")]))
    assert len(await proposals_for(pool, run)) == 1
    # Forty days later (moved back in the tables), the pair may meet again on a new topic.
    key = await pool.fetchval(
        "SELECT p.group_key FROM matcher.proposals p JOIN matcher.proposal_participants pp "
        "ON pp.proposal_id = p.id JOIN matcher.identities i ON i.contact_id = pp.contact_id "
        "WHERE i.external_id = $1",
        f"{run}-0",
    )
    await pool.execute(
        "UPDATE matcher.groups SET last_proposed_at = now() - interval '40 days' "
        "WHERE group_key = $1",
        key,
    )
    await pool.execute(
        "UPDATE matcher.proposal_participants SET created_at = now() - interval '40 days' "
        "WHERE proposal_id IN (SELECT id FROM matcher.proposals WHERE group_key = $1)",
        key,
    )
    await service.apply(EventBatch(events=[likes(run, 0, f"c {run}"), likes(run, 1, f"c {run}")]))
    assert len(await proposals_for(pool, run)) == 2


async def test_concurrent_matchers_never_exceed_the_cap(pool: asyncpg.Pool) -> None:
    """Three services on three connections race to introduce one popular person: the row
    lock under which the cap is re-checked lets exactly two introductions through."""
    run = _run()
    services = [
        MatcherService(MatcherStore(pool), MatchingPolicy(min_score=0.5, candidates_per_topic=50))
        for _ in range(3)
    ]
    await services[0].apply(EventBatch(events=[person(run, i) for i in range(10)]))
    for i in range(1, 10):
        await services[0].apply(EventBatch(events=[likes(run, i, f"hub {i} {run}")]))
    # Person 0 declares all nine topics in nine events, spread over the three services at once.
    await asyncio.gather(
        *(
            services[i % 3].apply(EventBatch(events=[likes(run, 0, f"hub {i} {run}")]))
            for i in range(1, 10)
        )
    )
    involving_0 = [f for f in await proposals_for(pool, run) if f"{run}-0" in f["ids"]]
    assert len(involving_0) == 2


async def test_a_handful_sharing_a_rare_topic_meet_as_one_group(
    matcher: MatcherService, pool: asyncpg.Pool
) -> None:
    run = _run()
    await matcher.apply(EventBatch(events=[person(run, i) for i in range(6)]))
    # Four people declare a topic nobody else has, in one batch (an import, a form).
    await matcher.apply(EventBatch(events=[likes(run, i, f"lichens {run}") for i in range(4)]))
    found = await proposals_for(pool, run)
    assert [f["ids"] for f in found] == [[f"{run}-{i}" for i in range(4)]]
    data = found[0]["event"]["data"]
    assert data["reason"] == f"You all care about lichens {run}, and nobody else here does yet."
    # A fifth holder later makes the topic too crowded for a group of strangers: a pair instead.
    await matcher.apply(EventBatch(events=[likes(run, 4, f"lichens {run}")]))
    found = await proposals_for(pool, run)
    assert len(found) == 2
    assert len(found[1]["ids"]) == 2 or len(found[0]["ids"]) == 2


async def test_no_group_when_two_of_them_already_met(
    matcher: MatcherService, pool: asyncpg.Pool
) -> None:
    run = _run()
    await matcher.apply(EventBatch(events=[person(run, i) for i in range(4)]))
    await matcher.apply(EventBatch(events=[likes(run, 0, f"a {run}"), likes(run, 1, f"a {run}")]))
    assert len(await proposals_for(pool, run)) == 1
    await matcher.apply(EventBatch(events=[likes(run, i, f"moss {run}") for i in range(3)]))
    sizes = sorted(len(f["ids"]) for f in await proposals_for(pool, run))
    assert 3 not in sizes  # 0 and 1 know each other: pairs, not a group
