"""The matcher's service and store against the real PostgreSQL (no broker: batches are applied
directly, outbox rows are read back from the table)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from services.matcher.service import MatcherService, MatchingPolicy
from services.matcher.store import MatcherStore
from shared.events import (
    ContactData,
    ContactUpserted,
    DeliveryData,
    DeliverySucceeded,
    EventBatch,
    InterestData,
    InterestDeclared,
    decode_batch,
)


@pytest.fixture
def matcher(pool: asyncpg.Pool) -> MatcherService:
    return MatcherService(
        MatcherStore(pool), MatchingPolicy(min_score=0.5, candidates_per_topic=50)
    )


def _run() -> str:
    return uuid.uuid4().hex[:8]


def contact(
    run: str, i: int, *, email: bool = True, at: datetime | None = None, name: str = ""
) -> ContactUpserted:
    return ContactUpserted(
        source="ingest",
        correlation_id=f"c-{run}",
        occurred_at=at or datetime.now(UTC),
        data=ContactData(
            source="t",
            external_id=f"{run}-{i}",
            name=name or f"Person {i}",
            email=f"p{i}.{run}@example.org" if email else None,
        ),
    )


def interest(run: str, i: int, topic: str, kind: str = "likes") -> InterestDeclared:
    return InterestDeclared(
        source="ingest",
        correlation_id=f"c-{run}",
        data=InterestData(source="t", external_id=f"{run}-{i}", topic=topic, kind=kind),
    )


async def proposals_for(pool: asyncpg.Pool, run: str) -> list[dict[str, Any]]:
    """The intro.proposed events queued in the outbox that involve this run's people."""
    rows = await pool.fetch(
        "SELECT body FROM messaging.outbox "
        "WHERE producer = 'matcher' AND routing_key = 'intro.proposed.v1'"
    )
    found = []
    for row in rows:
        for event in [json.loads(row["body"])]:  # the outbox keeps events one by one
            ids = [p["external_id"] for p in event["data"]["participants"]]
            if any(i.startswith(run) for i in ids):
                found.append({"ids": sorted(ids), "event": event})
    return found


async def test_two_people_liking_a_rare_topic_get_one_proposal(
    matcher: MatcherService, pool: asyncpg.Pool
) -> None:
    run = _run()
    await matcher.apply(EventBatch(events=[contact(run, i) for i in range(6)]))
    for i in range(2, 6):
        await matcher.apply(EventBatch(events=[interest(run, i, f"own topic {i} {run}")]))
    await matcher.apply(EventBatch(events=[interest(run, 0, f"rare {run}")]))
    await matcher.apply(EventBatch(events=[interest(run, 1, f"Rare  {run}")]))
    found = await proposals_for(pool, run)
    assert [f["ids"] for f in found] == [[f"{run}-0", f"{run}-1"]]
    data = found[0]["event"]["data"]
    assert data["topics"][0]["topic"] == f"rare {run}"
    assert data["reason"] == f"You both care about rare {run}."
    assert {c["address"] for p in data["participants"] for c in p["channels"]} == {
        f"p0.{run}@example.org",
        f"p1.{run}@example.org",
    }


async def test_a_redelivered_batch_changes_nothing_twice(
    matcher: MatcherService, pool: asyncpg.Pool
) -> None:
    run = _run()
    await matcher.apply(EventBatch(events=[contact(run, 0), contact(run, 1)]))
    batch = EventBatch(events=[interest(run, 0, f"t {run}"), interest(run, 1, f"t {run}")])
    await matcher.apply(batch)
    await matcher.apply(batch)
    await matcher.apply(decode_batch(batch.model_dump_json().encode()))
    assert len(await proposals_for(pool, run)) == 1
    people = await pool.fetchval("SELECT people FROM matcher.topics WHERE name = $1", f"t {run}")
    assert people == 2


async def test_the_same_pair_is_never_proposed_twice(
    matcher: MatcherService, pool: asyncpg.Pool
) -> None:
    run = _run()
    await matcher.apply(EventBatch(events=[contact(run, 0), contact(run, 1)]))
    for topic in ("a", "b", "c"):
        await matcher.apply(
            EventBatch(
                events=[interest(run, 0, f"{topic} {run}"), interest(run, 1, f"{topic} {run}")]
            )
        )
    assert len(await proposals_for(pool, run)) == 1


async def test_the_rarer_shared_topic_wins(matcher: MatcherService, pool: asyncpg.Pool) -> None:
    run = _run()
    await matcher.apply(EventBatch(events=[contact(run, i) for i in range(8)]))
    common = f"common {run}"
    # Persons 1..6 all like the common topic; person 7 shares only a rare one with person 0.
    await matcher.apply(EventBatch(events=[interest(run, i, common) for i in range(1, 7)]))
    await matcher.apply(EventBatch(events=[interest(run, 7, f"rare {run}")]))
    before = {tuple(f["ids"]) for f in await proposals_for(pool, run)}
    await matcher.apply(
        EventBatch(events=[interest(run, 0, common), interest(run, 0, f"rare {run}")])
    )
    after = [f for f in await proposals_for(pool, run) if tuple(f["ids"]) not in before]
    mine = [f for f in after if f"{run}-0" in f["ids"]]
    assert [f["ids"] for f in mine] == [[f"{run}-0", f"{run}-7"]]


async def test_seekers_meet_offerers_but_never_each_other(
    matcher: MatcherService, pool: asyncpg.Pool
) -> None:
    run = _run()
    topic = f"compliance {run}"
    await matcher.apply(EventBatch(events=[contact(run, i) for i in range(3)]))
    await matcher.apply(EventBatch(events=[interest(run, 0, topic, "seeks")]))
    await matcher.apply(EventBatch(events=[interest(run, 1, topic, "seeks")]))
    assert await proposals_for(pool, run) == []
    await matcher.apply(EventBatch(events=[interest(run, 2, topic, "offers")]))
    found = await proposals_for(pool, run)
    assert [f["ids"] for f in found] == [[f"{run}-0", f"{run}-2"]]
    [topic_entry] = found[0]["event"]["data"]["topics"]
    assert topic_entry["relation"] == "seeks_offers"
    assert topic_entry["seeker"]["external_id"] == f"{run}-0"
    assert topic_entry["offerer"]["external_id"] == f"{run}-2"


async def test_interests_before_contact_details_match_once_the_person_is_reachable(
    matcher: MatcherService, pool: asyncpg.Pool
) -> None:
    run = _run()
    await matcher.apply(EventBatch(events=[contact(run, 0)]))
    await matcher.apply(
        EventBatch(events=[interest(run, 0, f"t {run}"), interest(run, 1, f"t {run}")])
    )
    assert await proposals_for(pool, run) == []  # person 1 has no address yet
    await matcher.apply(EventBatch(events=[contact(run, 1, email=False)]))
    assert await proposals_for(pool, run) == []  # still none
    await matcher.apply(EventBatch(events=[contact(run, 1)]))
    assert [f["ids"] for f in await proposals_for(pool, run)] == [[f"{run}-0", f"{run}-1"]]


async def test_a_late_older_contact_update_does_not_overwrite_a_newer_one(
    matcher: MatcherService, pool: asyncpg.Pool
) -> None:
    run = _run()
    now = datetime.now(UTC)
    await matcher.apply(EventBatch(events=[contact(run, 0, at=now, name="New Name")]))
    await matcher.apply(
        EventBatch(events=[contact(run, 0, at=now - timedelta(hours=1), name="Old Name")])
    )
    name = await pool.fetchval(
        "SELECT c.name FROM matcher.contacts c JOIN matcher.identities i ON i.contact_id = c.id "
        "WHERE i.source = 't' AND i.external_id = $1",
        f"{run}-0",
    )
    assert name == "New Name"


async def test_concurrent_interests_on_one_topic_never_miss_each_other(
    matcher: MatcherService, pool: asyncpg.Pool
) -> None:
    """Two people declare a topic in two transactions at once. Each transaction's candidate
    lookup cannot see the other's uncommitted interest; only the per-topic lock makes the second
    wait and then see the first. (Person A already offers the topic, so A's new `likes` changes
    no topic counter, which would otherwise lock the row by accident.)"""
    run = _run()
    pairs = 25
    await matcher.apply(EventBatch(events=[contact(run, i) for i in range(pairs * 2)]))
    for i in range(0, pairs * 2, 2):
        await matcher.apply(
            EventBatch(events=[interest(run, i, f"simultaneous {i} {run}", "offers")])
        )
    await asyncio.gather(
        *(
            matcher.apply(EventBatch(events=[interest(run, i, f"simultaneous {i - i % 2} {run}")]))
            for i in range(pairs * 2)
        )
    )
    found = sorted(f["ids"] for f in await proposals_for(pool, run))
    assert found == sorted([f"{run}-{i}", f"{run}-{i + 1}"] for i in range(0, pairs * 2, 2))


async def test_a_person_becoming_reachable_meets_a_concurrent_newcomer(
    matcher: MatcherService, pool: asyncpg.Pool
) -> None:
    """A's interest is known but A had no address; A's contact details and B's interest on the
    same topic arrive at once: one of the two transactions must see the other."""
    run = _run()
    pairs = 25
    await matcher.apply(EventBatch(events=[contact(run, i) for i in range(1, pairs * 2, 2)]))
    await matcher.apply(
        EventBatch(events=[interest(run, i, f"reach {i} {run}") for i in range(0, pairs * 2, 2)])
    )
    await asyncio.gather(
        *(
            matcher.apply(EventBatch(events=[contact(run, i)]))
            if i % 2 == 0
            else matcher.apply(EventBatch(events=[interest(run, i, f"reach {i - 1} {run}")]))
            for i in range(pairs * 2)
        )
    )
    found = sorted(f["ids"] for f in await proposals_for(pool, run))
    assert found == sorted([f"{run}-{i}", f"{run}-{i + 1}"] for i in range(0, pairs * 2, 2))


async def test_delivery_outcomes_are_recorded(matcher: MatcherService, pool: asyncpg.Pool) -> None:
    run = _run()
    await matcher.apply(EventBatch(events=[contact(run, 0), contact(run, 1)]))
    await matcher.apply(
        EventBatch(events=[interest(run, 0, f"t {run}"), interest(run, 1, f"t {run}")])
    )
    [found] = await proposals_for(pool, run)
    proposal_id = uuid.UUID(found["event"]["data"]["proposal_id"])
    delivered = DeliverySucceeded(
        source="notifier",
        correlation_id="c",
        data=DeliveryData(
            delivery_id=uuid.uuid4(),
            proposal_id=proposal_id,
            recipient={"source": "t", "external_id": f"{run}-0"},
            channel="email",
            attempts=1,
        ),
    )
    await matcher.apply(EventBatch(events=[delivered]))
    statuses = await pool.fetch(
        "SELECT delivery_status FROM matcher.proposal_participants WHERE proposal_id = $1 "
        "ORDER BY delivery_status",
        proposal_id,
    )
    assert [r["delivery_status"] for r in statuses] == ["delivered", "pending"]
