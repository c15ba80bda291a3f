"""Identity resolution against the real PostgreSQL: one person from two sources is one contact,
never introduced to themselves, and an unmerge gives both back exactly."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
import pytest

from services.matcher import contacts_admin
from services.matcher.identity_resolution import UnmergeRefused, unmerge
from services.matcher.service import MatcherService, MatchingPolicy
from services.matcher.store import MatcherStore
from shared.events import (
    ChannelAddress,
    ChannelType,
    ContactData,
    ContactOptedOut,
    ContactUpserted,
    EventBatch,
    InterestData,
    InterestDeclared,
    OptOutData,
)
from shared.settings import Settings
from tests.integration.test_matcher_service import proposals_for


@pytest.fixture
def matcher(pool: asyncpg.Pool) -> MatcherService:
    return MatcherService(
        MatcherStore(pool), MatchingPolicy(min_score=0.5, candidates_per_topic=50)
    )


def contact(
    run: str, source: str, key: str, *, email: str | None = None, name: str = "Ada", **extra: Any
) -> ContactUpserted:
    return ContactUpserted(
        source="ingest",
        correlation_id=f"c-{run}",
        data=ContactData(
            source=source,
            external_id=f"{run}-{key}",
            name=name,
            email=email,
            **extra,
        ),
    )


def interest(run: str, source: str, key: str, topic: str) -> InterestDeclared:
    return InterestDeclared(
        source="ingest",
        correlation_id=f"c-{run}",
        data=InterestData(source=source, external_id=f"{run}-{key}", topic=topic),
    )


async def contact_of(pool: asyncpg.Pool, source: str, external_id: str) -> int:
    found: int = await pool.fetchval(
        "SELECT contact_id FROM matcher.identities WHERE source = $1 AND external_id = $2",
        source,
        external_id,
    )
    return found


async def merged_events(pool: asyncpg.Pool, run: str, kind: str) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT body FROM messaging.outbox WHERE producer = 'matcher' AND routing_key = $1",
        kind,
    )
    events = [json.loads(r["body"]) for r in rows]
    return [e for e in events if run in json.dumps(e["data"])]


def _run() -> str:
    return uuid.uuid4().hex[:8]


async def test_the_same_email_from_two_sources_is_one_person(
    matcher: MatcherService, pool: asyncpg.Pool
) -> None:
    run = _run()
    await matcher.apply(EventBatch(events=[contact(run, "crm", "1", email=f"ada.{run}@x.org")]))
    await matcher.apply(
        EventBatch(events=[contact(run, "forum", "a", email=f"ADA.{run}@X.org", name="Ada L")])
    )
    crm, forum = (
        await contact_of(pool, "crm", f"{run}-1"),
        await contact_of(pool, "forum", f"{run}-a"),
    )
    assert crm == forum
    merged = await merged_events(pool, run, "contact.merged.v1")
    assert len(merged) == 1
    assert merged[0]["data"]["matched_on"] == "email"
    assert merged[0]["data"]["into"] == [{"source": "crm", "external_id": f"{run}-1"}]
    assert merged[0]["data"]["merged"] == [{"source": "forum", "external_id": f"{run}-a"}]
    # The newest profile wins; the absorbed contact is a tombstone without personal data.
    row = await pool.fetchrow("SELECT name FROM matcher.contacts WHERE id = $1", crm)
    assert row["name"] == "Ada L"
    tombstones = await pool.fetch(
        "SELECT name, channels, deliverable FROM matcher.contacts WHERE merged_into = $1", crm
    )
    assert [(t["name"], t["deliverable"]) for t in tombstones] == [(None, False)]


async def test_a_person_is_never_introduced_to_themselves(
    matcher: MatcherService, pool: asyncpg.Pool
) -> None:
    run = _run()
    topic = f"rare topic {run}"
    email = f"grace.{run}@x.org"
    await matcher.apply(EventBatch(events=[contact(run, "crm", "1", email=email)]))
    await matcher.apply(EventBatch(events=[interest(run, "crm", "1", topic)]))
    # The second identity's interest arrives before its contact details (a bare contact),
    # then its contact event merges them.
    await matcher.apply(EventBatch(events=[interest(run, "slack", "g", topic)]))
    await matcher.apply(EventBatch(events=[contact(run, "slack", "g", email=email)]))
    assert await proposals_for(pool, run) == []
    people: int = await pool.fetchval("SELECT people FROM matcher.topics WHERE name = $1", topic)
    assert people == 1
    # Someone else with the topic meets the person once, not once per identity.
    await matcher.apply(EventBatch(events=[contact(run, "crm", "2", email=f"o.{run}@x.org")]))
    await matcher.apply(EventBatch(events=[interest(run, "crm", "2", topic)]))
    proposals = await proposals_for(pool, run)
    assert [p["ids"] for p in proposals] == [[f"{run}-1", f"{run}-2"]]


async def test_a_group_met_before_a_merge_is_not_proposed_again(
    matcher: MatcherService, pool: asyncpg.Pool
) -> None:
    run = _run()
    topic = f"met before {run}"
    await matcher.apply(
        EventBatch(
            events=[
                contact(run, "crm", "1", email=f"p1.{run}@x.org"),
                contact(run, "crm", "2", email=f"p2.{run}@x.org"),
            ]
        )
    )
    await matcher.apply(EventBatch(events=[interest(run, "forum", "b", topic)]))
    await matcher.apply(EventBatch(events=[contact(run, "forum", "b", email=f"p1b.{run}@x.org")]))
    await matcher.apply(EventBatch(events=[interest(run, "crm", "2", topic)]))
    assert [p["ids"] for p in await proposals_for(pool, run)] == [[f"{run}-2", f"{run}-b"]]
    # forum/b turns out to be crm/1 (its email is now crm/1's); crm/1 and crm/2 share another
    # topic: still no second introduction of the same two people.
    await matcher.apply(EventBatch(events=[contact(run, "forum", "b", email=f"p1.{run}@x.org")]))
    assert await contact_of(pool, "forum", f"{run}-b") == await contact_of(pool, "crm", f"{run}-1")
    await matcher.apply(EventBatch(events=[interest(run, "crm", "1", f"again {run}")]))
    await matcher.apply(EventBatch(events=[interest(run, "crm", "2", f"again {run}")]))
    assert len(await proposals_for(pool, run)) == 1


async def test_the_same_slack_member_is_one_person(
    matcher: MatcherService, pool: asyncpg.Pool
) -> None:
    run = _run()
    member = "U" + run.upper()
    slack = [ChannelAddress(type=ChannelType.SLACK, address=member)]
    await matcher.apply(EventBatch(events=[contact(run, "crm", "1", channels=slack)]))
    await matcher.apply(EventBatch(events=[contact(run, "bot", "1", channels=slack)]))
    assert await contact_of(pool, "crm", f"{run}-1") == await contact_of(pool, "bot", f"{run}-1")
    merged = await merged_events(pool, run, "contact.merged.v1")
    assert [m["data"]["matched_on"] for m in merged] == ["chat_handle"]


async def test_identities_arriving_at_once_still_merge(
    matcher: MatcherService, pool: asyncpg.Pool
) -> None:
    run = _run()
    email = f"same.{run}@x.org"
    await asyncio.gather(
        *(
            matcher.apply(EventBatch(events=[contact(run, f"s{i}", "1", email=email)]))
            for i in range(4)
        )
    )
    ids = {await contact_of(pool, f"s{i}", f"{run}-1") for i in range(4)}
    assert len(ids) == 1


async def test_unmerge_gives_both_people_back(
    matcher: MatcherService, pool: asyncpg.Pool, settings: Settings
) -> None:
    run = _run()
    email = f"shared.{run}@x.org"
    await matcher.apply(EventBatch(events=[contact(run, "crm", "1", email=email, name="One")]))
    await matcher.apply(EventBatch(events=[interest(run, "crm", "1", f"one only {run}")]))
    await matcher.apply(EventBatch(events=[interest(run, "crm", "1", f"both {run}")]))
    await matcher.apply(EventBatch(events=[contact(run, "hr", "2", email=email, name="Two")]))
    # After the merge the second identity declares more, and opts out.
    await matcher.apply(EventBatch(events=[interest(run, "hr", "2", f"two only {run}")]))
    await matcher.apply(EventBatch(events=[interest(run, "hr", "2", f"both {run}")]))
    survivor = await contact_of(pool, "crm", f"{run}-1")
    assert survivor == await contact_of(pool, "hr", f"{run}-2")
    both_before = await pool.fetchval(
        "SELECT people FROM matcher.topics WHERE name = $1", f"both {run}"
    )
    assert both_before == 1

    view = await contacts_admin.show(settings, ("hr", f"{run}-2"))
    assert view is not None and len(view.merges) == 1
    data = await contacts_admin.unmerge(settings, ("hr", f"{run}-2"), None)
    assert [r.external_id for r in data.restored] == [f"{run}-2"]
    assert [r.external_id for r in data.remaining] == [f"{run}-1"]

    one, two = await contact_of(pool, "crm", f"{run}-1"), await contact_of(pool, "hr", f"{run}-2")
    assert one == survivor and two != one

    async def topics(contact_id: int) -> set[str]:
        rows = await pool.fetch(
            "SELECT t.name FROM matcher.interests i JOIN matcher.topics t ON t.id = i.topic_id "
            "WHERE i.contact_id = $1",
            contact_id,
        )
        return {r["name"] for r in rows}

    assert await topics(one) == {f"one only {run}", f"both {run}"}
    assert await topics(two) == {f"two only {run}", f"both {run}"}
    names = {
        r["id"]: r["name"]
        for r in await pool.fetch(
            "SELECT id, name FROM matcher.contacts WHERE id = ANY($1::bigint[])", [one, two]
        )
    }
    assert names == {one: "One", two: "Two"}
    assert (
        await pool.fetchval("SELECT people FROM matcher.topics WHERE name = $1", f"both {run}") == 2
    )
    assert len(await merged_events(pool, run, "contact.unmerged.v1")) == 1
    # The same email again does not merge them back.
    await matcher.apply(EventBatch(events=[contact(run, "hr", "2", email=email, name="Two")]))
    assert await contact_of(pool, "hr", f"{run}-2") == two
    # Nothing left to undo.
    with pytest.raises(UnmergeRefused):
        async with MatcherStore(pool).unit_of_work() as uow:
            await unmerge(uow, ("hr", f"{run}-2"))


async def test_an_opt_out_under_one_identity_holds_for_the_merged_person_and_after_unmerge(
    matcher: MatcherService, pool: asyncpg.Pool, settings: Settings
) -> None:
    run = _run()
    email = f"quiet.{run}@x.org"
    await matcher.apply(EventBatch(events=[contact(run, "crm", "1", email=email)]))
    await matcher.apply(
        EventBatch(
            events=[
                ContactOptedOut(
                    source="ingest",
                    correlation_id=f"c-{run}",
                    data=OptOutData(source="crm", external_id=f"{run}-1", reason="request"),
                )
            ]
        )
    )
    await matcher.apply(EventBatch(events=[contact(run, "hr", "2", email=email)]))
    merged = await contact_of(pool, "hr", f"{run}-2")
    assert await pool.fetchval("SELECT opted_out FROM matcher.contacts WHERE id = $1", merged)
    await contacts_admin.unmerge(settings, ("hr", f"{run}-2"), None)
    one, two = await contact_of(pool, "crm", f"{run}-1"), await contact_of(pool, "hr", f"{run}-2")
    flags = {
        r["id"]: r["opted_out"]
        for r in await pool.fetch(
            "SELECT id, opted_out FROM matcher.contacts WHERE id = ANY($1::bigint[])", [one, two]
        )
    }
    assert flags == {one: True, two: False}
