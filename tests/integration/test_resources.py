"""People to information: a resource reaches the people most interested in it, once each,
within the weekly resource cap (matcher side, against the real PostgreSQL)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from services.matcher.resources import Resources
from services.matcher.service import MatcherService, MatchingPolicy
from services.matcher.store import MatcherStore
from shared.events import EventBatch, InterestData, InterestDeclared
from tests.integration.test_matcher_constraints import person


@pytest.fixture
def matcher(pool: asyncpg.Pool) -> MatcherService:
    return MatcherService(
        MatcherStore(pool), MatchingPolicy(min_score=1_000.0, candidates_per_topic=50)
    )


@pytest.fixture
def resources(pool: asyncpg.Pool) -> Resources:
    return Resources(MatcherStore(pool), cap_per_week=2, half_life_days=365)


def declared(run: str, i: int, topic: str, kind: str, weight: float) -> InterestDeclared:
    return InterestDeclared(
        source="ingest",
        correlation_id=f"c-{run}",
        data=InterestData(
            source="t", external_id=f"{run}-{i}", topic=topic, kind=kind, weight=weight
        ),
    )


async def resource_events(pool: asyncpg.Pool, run: str) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT body FROM messaging.outbox "
        "WHERE producer = 'matcher' AND routing_key = 'resource.proposed.v1'"
    )
    events = [json.loads(r["body"]) for r in rows]
    return [e for e in events if e["data"]["recipient"]["external_id"].startswith(run)]


async def test_a_resource_reaches_the_most_interested_once_each(
    matcher: MatcherService, resources: Resources, pool: asyncpg.Pool
) -> None:
    run = uuid.uuid4().hex[:8]
    topic = f"kites {run}"
    await matcher.apply(
        EventBatch(
            events=[person(run, i) for i in range(5)]
            + [person(run, 5, snoozed_until=datetime.now(UTC) + timedelta(days=2))]
        )
    )
    weights = {0: ("likes", 3.0), 1: ("likes", 2.0), 2: ("likes", 1.0), 3: ("seeks", 1.0)}
    weights |= {4: ("offers", 5.0), 5: ("likes", 9.0)}
    await matcher.apply(
        EventBatch(events=[declared(run, i, topic, k, w) for i, (k, w) in weights.items()])
    )
    first = await resources.share(
        f"https://example.org/{run}", "Kites <and> lines", [topic], 3, f"c-{run}"
    )
    assert first.recipients == 3
    events = await resource_events(pool, run)
    assert sorted(e["data"]["recipient"]["external_id"] for e in events) == [
        f"{run}-0",
        f"{run}-1",
        f"{run}-2",
    ]
    data = events[0]["data"]
    assert data["title"] == "Kites <and> lines"
    assert data["reason"] == f"Because you care about {topic}."
    assert data["topics"] == [topic]

    # Posting it again reaches only who did not get it: the seeker; never the offerer (an
    # offer is not an interest in reading about it) nor the snoozed person.
    again = await resources.share(
        f"https://example.org/{run}", "Kites <and> lines", [topic], 10, f"c-{run}"
    )
    assert (again.recipients, again.total_recipients) == (1, 4)
    assert again.resource_id == first.resource_id
    ids = sorted(e["data"]["recipient"]["external_id"] for e in await resource_events(pool, run))
    assert ids == [f"{run}-{i}" for i in range(4)]


async def test_the_resource_cap_holds(
    matcher: MatcherService, resources: Resources, pool: asyncpg.Pool
) -> None:
    run = uuid.uuid4().hex[:8]
    await matcher.apply(EventBatch(events=[person(run, 0)]))
    await matcher.apply(EventBatch(events=[declared(run, 0, f"news {run}", "likes", 1.0)]))
    reached = [
        (
            await resources.share(f"https://example.org/{run}/{n}", "News", [f"news {run}"], 5, "c")
        ).recipients
        for n in range(3)
    ]
    assert reached == [1, 1, 0]
    assert len(await resource_events(pool, run)) == 2


async def test_a_preview_counts_and_samples_who_a_share_would_reach_and_sends_nothing(
    matcher: MatcherService, resources: Resources, pool: asyncpg.Pool
) -> None:
    run = uuid.uuid4().hex[:8]
    topic = f"gliders {run}"
    await matcher.apply(
        EventBatch(
            events=[person(run, i) for i in range(4)]
            + [person(run, 4, snoozed_until=datetime.now(UTC) + timedelta(days=2))]
        )
    )
    weights = {0: ("likes", 1.0), 1: ("likes", 3.0), 2: ("seeks", 2.0), 3: ("offers", 5.0)}
    weights |= {4: ("likes", 9.0)}  # paused: not reached
    await matcher.apply(
        EventBatch(events=[declared(run, i, topic, k, w) for i, (k, w) in weights.items()])
    )
    url = f"https://example.org/preview/{run}"
    first = await resources.preview([topic], url, 0, 2)
    assert first.people == 3
    assert [r["external_id"] for r in first.sample] == [f"{run}-1", f"{run}-2"]  # best first
    assert first.sample[0]["topics"] == [topic]
    assert first.next_offset == 2
    rest = await resources.preview([topic], url, 2, 2)
    assert [r["external_id"] for r in rest.sample] == [f"{run}-0"]
    assert rest.next_offset is None
    assert await resource_events(pool, run) == []  # a preview sends nothing
    await resources.share(url, "Gliders", [topic], 1, f"c-{run}")
    after = await resources.preview([topic], url, 0, 10)
    assert after.people == 2  # who already got it is not counted again
    assert (await resources.preview([topic], None, 0, 10)).people == 3
