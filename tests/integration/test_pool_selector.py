"""A pool's selector is one SQL fragment (`store.contacts.in_pool`) read two ways: a round's
members (`ContactRecords.pool_members`, who may be placed or listed as left out) and the
console's preview (`Directory.pool_size`, how many a round may place). Against the real
PostgreSQL, every kind of selector gives both the same people; each test selects its own people
by a tag and sources of its own."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from services.matcher.directory import Directory
from services.matcher.service import MatcherService, MatchingPolicy
from services.matcher.store import MatcherStore
from shared.events import ContactUpserted, EventBatch
from tests.integration.test_identity_resolution import contact


@pytest.fixture
def matcher(pool: asyncpg.Pool) -> MatcherService:
    # A high live threshold: nobody is introduced while the people are loaded.
    return MatcherService(
        MatcherStore(pool), MatchingPolicy(min_score=1_000.0, candidates_per_topic=50)
    )


def member(
    run: str, i: int, source: str, *, tags: list[str], organization: str | None, reachable: bool
) -> ContactUpserted:
    # Without an address there is no channel: not reachable.
    email = f"p{i}.{run}@example.org" if reachable else None
    return contact(run, source, str(i), email=email, organization=organization, tags=tags)


async def placeable_members(pool: asyncpg.Pool, selector: dict[str, list[str]]) -> set[int]:
    """The round's members it may place: reachable and not opted out."""
    async with MatcherStore(pool).unit_of_work() as uow:
        members = await uow.contacts.pool_members(selector)
    return {m.id for m in members if m.deliverable and not m.opted_out}


async def test_a_rounds_members_and_the_preview_select_the_same_people(
    matcher: MatcherService, pool: asyncpg.Pool
) -> None:
    run = uuid.uuid4().hex[:8]
    tag, other_tag = f"r{run}", f"o{run}"
    crm, forum = f"crm{run}", f"forum{run}"
    people = [
        # (source, tags, organization, reachable)
        (crm, [tag], "ACME", True),
        (crm, [tag, other_tag], "Globex", True),
        (forum, [tag], "acme", True),
        (forum, [other_tag], "ACME", True),
        (crm, [tag], None, False),  # no channel: a member, never placed
        (forum, [tag], "Initech", True),  # opted out below
        (crm, [tag], "ACME", True),  # erased below
        (forum, [tag], "ACME", True),  # merged into person 0 below
    ]
    await matcher.apply(
        EventBatch(
            events=[
                member(run, i, source, tags=tags, organization=org, reachable=ok)
                for i, (source, tags, org, ok) in enumerate(people)
            ]
        )
    )
    ids = {
        r["external_id"]: r["contact_id"]
        for r in await pool.fetch(
            "SELECT external_id, contact_id FROM matcher.identities WHERE external_id LIKE $1",
            f"{run}-%",
        )
    }
    person = [ids[f"{run}-{i}"] for i in range(len(people))]
    await pool.execute("UPDATE matcher.contacts SET opted_out = true WHERE id = $1", person[5])
    await pool.execute("UPDATE matcher.contacts SET erased_at = now() WHERE id = $1", person[6])
    # Left as a merge leaves the absorbed contact but for its tags, channel and organization,
    # which a merge clears: only `merged_into` can keep it out here.
    await pool.execute(
        "UPDATE matcher.contacts SET merged_into = $2 WHERE id = $1", person[7], person[0]
    )

    directory = Directory(pool)
    expected = {
        (("tags", (tag,)),): {0, 1, 2},
        (("tags", (tag, other_tag)),): {0, 1, 2, 3},
        (("sources", (forum,)),): {2, 3},
        (("tags", (tag,)), ("sources", (crm,))): {0, 1},
        (("tags", (tag,)), ("organizations", ("acme",))): {0, 2},
        (("organizations", ("Acme", "GLOBEX")), ("sources", (crm, forum))): {0, 1, 2, 3},
        (("tags", (other_tag,)), ("sources", (crm,)), ("organizations", ("globex",))): {1},
        (("tags", (f"nobody{run}",)),): set(),
    }
    for criteria, placeable in expected.items():
        selector = {key: list(values) for key, values in criteria}
        members = await placeable_members(pool, selector)
        assert members == {person[i] for i in placeable}, selector
        assert await directory.pool_size(selector) == len(placeable), selector

    # The unreachable and the opted-out are members (a round lists them as left out); the
    # erased and the merged-away are not.
    async with MatcherStore(pool).unit_of_work() as uow:
        everyone_tagged = {m.id for m in await uow.contacts.pool_members({"tags": [tag]})}
    assert everyone_tagged == {person[i] for i in (0, 1, 2, 4, 5)}


async def test_without_a_selector_both_take_in_every_person_and_no_merged_away_contact(
    matcher: MatcherService, pool: asyncpg.Pool
) -> None:
    run = uuid.uuid4().hex[:8]
    await matcher.apply(
        EventBatch(
            events=[
                member(run, i, f"s{run}", tags=[], organization=None, reachable=True)
                for i in range(2)
            ]
        )
    )
    first, second = [
        await pool.fetchval(
            "SELECT contact_id FROM matcher.identities WHERE external_id = $1", f"{run}-{i}"
        )
        for i in range(2)
    ]
    await pool.execute("UPDATE matcher.contacts SET merged_into = $2 WHERE id = $1", second, first)
    # One statement's snapshot each; nothing else writes while this test runs.
    members = await placeable_members(pool, {})
    assert first in members and second not in members
    assert await Directory(pool).pool_size({}) == len(members)
