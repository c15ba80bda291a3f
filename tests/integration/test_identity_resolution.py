"""Identity resolution against the real PostgreSQL: one person from two verified sources, or twice
from one source, is one contact, never introduced to themselves, and an unmerge gives both back
exactly; a source that is not verified cannot merge into, or redirect, another's person."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from services.matcher import contacts_admin
from services.matcher.identity_keys import key_digest
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

# The sources these tests merge across, as ROAC_IDENTITY_VERIFIED_SOURCES would list them.
VERIFIED = frozenset({"crm", "forum", "slack", "bot", "hr", "s0", "s1", "s2", "s3"})


@pytest.fixture
def matcher(pool: asyncpg.Pool) -> MatcherService:
    return MatcherService(
        MatcherStore(pool),
        MatchingPolicy(min_score=0.5, candidates_per_topic=50, verified_sources=VERIFIED),
    )


@pytest.fixture
def unverified(pool: asyncpg.Pool) -> MatcherService:
    """A matcher configured as by default: no source verifies its identifiers."""
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
    record = await pool.fetchrow(
        "SELECT reason, sources, matched_on FROM matcher.merges WHERE survivor_id = $1", crm
    )
    assert dict(record) == {
        "reason": "verified_sources",
        "sources": ["crm", "forum"],
        "matched_on": "email",
    }
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


async def channels_of(pool: asyncpg.Pool, contact_id: int) -> list[str]:
    found = await pool.fetchval("SELECT channels FROM matcher.contacts WHERE id = $1", contact_id)
    return [c["address"] for c in (json.loads(found) if isinstance(found, str) else found)]


def _refused(matched_on: str) -> float:
    found = REGISTRY.get_sample_value(
        "roac_matcher_merges_refused_total", {"matched_on": matched_on}
    )
    return found or 0.0


@pytest.mark.parametrize("source", ["evil", "signup"])
async def test_an_unverified_source_cannot_take_over_another_source_s_person(
    matcher: MatcherService, pool: asyncpg.Pool, source: str
) -> None:
    """The hijack: an integration upserts a contact with the victim's email and its own channel
    first. crm is verified, the other source is not: no merge, and the victim's introduction
    names and reaches only the victim's own channel."""
    run = _run()
    email = f"victim.{run}@x.org"
    topic = f"hijacked topic {run}"
    await matcher.apply(EventBatch(events=[contact(run, "crm", "v", email=email, name="Vic")]))
    await matcher.apply(EventBatch(events=[interest(run, "crm", "v", topic)]))
    refused_before = _refused("email")
    hijack = contact(
        run,
        source,
        "h",
        email=email,
        name="Not Vic",
        channels=[
            ChannelAddress(type=ChannelType.EMAIL, address=f"attacker.{run}@evil.example"),
            ChannelAddress(type=ChannelType.EMAIL, address=email),
        ],
    )
    await matcher.apply(EventBatch(events=[hijack]))
    victim, hijacker = (
        await contact_of(pool, "crm", f"{run}-v"),
        await contact_of(pool, source, f"{run}-h"),
    )
    assert victim != hijacker
    assert await merged_events(pool, run, "contact.merged.v1") == []
    assert _refused("email") == refused_before + 1
    assert await channels_of(pool, victim) == [email]
    name = await pool.fetchval("SELECT name FROM matcher.contacts WHERE id = $1", victim)
    assert name == "Vic"
    # Someone shares the victim's topic: the introduction reaches the victim's own address.
    await matcher.apply(EventBatch(events=[contact(run, "crm", "o", email=f"o.{run}@x.org")]))
    await matcher.apply(EventBatch(events=[interest(run, "crm", "o", topic)]))
    (proposal,) = await proposals_for(pool, run)
    assert proposal["ids"] == [f"{run}-o", f"{run}-v"]
    participants = {p["external_id"]: p for p in proposal["event"]["data"]["participants"]}
    assert participants[f"{run}-v"]["source"] == "crm"
    assert [c["address"] for c in participants[f"{run}-v"]["channels"]] == [email]


async def test_two_unverified_sources_do_not_merge_by_default(
    unverified: MatcherService, pool: asyncpg.Pool
) -> None:
    run = _run()
    email = f"two.{run}@x.org"
    await unverified.apply(EventBatch(events=[contact(run, "crm", "1", email=email)]))
    await unverified.apply(EventBatch(events=[contact(run, "forum", "a", email=email)]))
    assert await contact_of(pool, "crm", f"{run}-1") != await contact_of(pool, "forum", f"{run}-a")


async def test_the_same_source_still_merges_without_verified_sources(
    unverified: MatcherService, pool: asyncpg.Pool, settings: Settings
) -> None:
    run = _run()
    email = f"twice.{run}@x.org"
    await unverified.apply(EventBatch(events=[contact(run, "crm", "1", email=email)]))
    await unverified.apply(EventBatch(events=[contact(run, "crm", "2", email=email.upper())]))
    one = await contact_of(pool, "crm", f"{run}-1")
    assert one == await contact_of(pool, "crm", f"{run}-2")
    view = await contacts_admin.show(settings, ("crm", f"{run}-2"))
    assert view is not None
    (merge,) = view.history
    assert (merge.reason, merge.sources, merge.matched_on) == (
        "same_source",
        ("crm", "crm"),
        "email",
    )
    assert [view.refs[i] for i in merge.identity_ids] == [("crm", f"{run}-2")]


async def test_a_verified_merge_keeps_each_identity_s_channels_in_their_place(
    matcher: MatcherService, pool: asyncpg.Pool
) -> None:
    """Both sources verified: one person, reached first on the older identity's channels, in
    that identity's order; the newer source's updates change only its own channels, behind."""
    run = _run()
    email = f"kept.{run}@x.org"
    hook = "https://hooks.slack.com/services/T0/B0/forum"
    member = "U" + run.upper()

    def forum(*channels: ChannelAddress) -> ContactUpserted:
        return contact(run, "forum", "a", email=email, name="Forum Ada", channels=list(channels))

    await matcher.apply(
        EventBatch(
            events=[
                contact(
                    run,
                    "crm",
                    "1",
                    email=email,
                    channels=[
                        ChannelAddress(type=ChannelType.EMAIL, address=email),
                        ChannelAddress(type=ChannelType.SLACK, address=member),
                    ],
                )
            ]
        )
    )
    await matcher.apply(
        EventBatch(
            events=[
                forum(
                    ChannelAddress(type=ChannelType.SLACK_WEBHOOK, address=hook),
                    ChannelAddress(type=ChannelType.EMAIL, address=email),
                )
            ]
        )
    )
    person = await contact_of(pool, "crm", f"{run}-1")
    assert person == await contact_of(pool, "forum", f"{run}-a")
    assert await channels_of(pool, person) == [email, member, hook]
    # The newest profile still names the person; the channels stay the crm identity's first.
    assert await pool.fetchval("SELECT name FROM matcher.contacts WHERE id = $1", person) == (
        "Forum Ada"
    )
    # forum changes its own channels (a merged person's update takes the rebuild path).
    other_hook = "https://hooks.slack.com/services/T0/B0/other"
    await matcher.apply(
        EventBatch(
            events=[forum(ChannelAddress(type=ChannelType.SLACK_WEBHOOK, address=other_hook))]
        )
    )
    assert await channels_of(pool, person) == [email, member, other_hook]
    # crm changes its own: its order is the person's, forum's channel stays behind.
    await matcher.apply(
        EventBatch(
            events=[
                contact(
                    run,
                    "crm",
                    "1",
                    email=email,
                    channels=[
                        ChannelAddress(type=ChannelType.SLACK, address=member),
                        ChannelAddress(type=ChannelType.EMAIL, address=email),
                    ],
                )
            ]
        )
    )
    assert await channels_of(pool, person) == [member, email, other_hook]


async def test_an_address_a_person_no_longer_has_leaves_no_match_key(
    matcher: MatcherService, pool: asyncpg.Pool
) -> None:
    # A plain SHA-256 of a guessable address, kept for nobody once it was replaced (erasure
    # forgets only the keys a person holds at the time).
    run = _run()
    old, new = f"old.{run}@x.org", f"new.{run}@x.org"
    shared = f"shared.{run}@x.org"
    await matcher.apply(EventBatch(events=[contact(run, "crm", "1", email=old)]))
    await matcher.apply(EventBatch(events=[contact(run, "crm", "2", email=shared)]))
    await matcher.apply(EventBatch(events=[contact(run, "forum", "3", email=shared)]))
    held = "SELECT count(*) FROM matcher.match_keys WHERE digest = $1"
    assert await pool.fetchval(held, key_digest("email", old)) == 1
    await matcher.apply(EventBatch(events=[contact(run, "crm", "1", email=new)]))
    assert await pool.fetchval(held, key_digest("email", old)) == 0
    assert await pool.fetchval(held, key_digest("email", new)) == 1
    # A key another identity still holds stays.
    await matcher.apply(EventBatch(events=[contact(run, "crm", "2", email=new.upper())]))
    assert await pool.fetchval(held, key_digest("email", shared)) == 1
