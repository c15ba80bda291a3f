"""Erasure in the matcher and the notifier against the real PostgreSQL: what is scrubbed, and
events that raced the erasure (published before it, applied after) bring nobody back."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from services.matcher.service import MatcherService, MatchingPolicy
from services.matcher.store import MatcherStore
from services.notifier.links import LinkAction
from services.notifier.people import PeopleRequests
from services.notifier.store.uow import NotifierStore
from shared.erasure import ERASED
from shared.events import (
    ContactErased,
    ContactOptedOut,
    ContactRef,
    ErasureData,
    EventBatch,
    InterestData,
    InterestDeclared,
    OptOutData,
)
from shared.settings import Settings
from tests.integration.test_matcher_service import contact, interest, proposals_for
from tests.integration.test_notifier_service import (
    NOON,
    Notifier,
    _answer_link,
    _notifier,
    _person,
    _proposal,
)
from tests.support.smtp_sink import smtp_sink


def _erasure(run: str, i: int, at: datetime | None = None) -> ContactErased:
    return ContactErased(
        source="ingest",
        correlation_id=f"c-{run}",
        occurred_at=at or datetime.now(UTC),
        data=ErasureData(source="t", external_id=f"{run}-{i}"),
    )


async def test_matcher_erasure_scrubs_the_person_and_late_events_are_dropped(
    pool: asyncpg.Pool,
) -> None:
    matcher = MatcherService(
        MatcherStore(pool), MatchingPolicy(min_score=0.1, candidates_per_topic=50)
    )
    run = uuid.uuid4().hex[:8]
    before = datetime.now(UTC) - timedelta(seconds=5)
    await matcher.apply(EventBatch(events=[contact(run, i) for i in range(6)]))
    for i in range(2, 6):
        await matcher.apply(EventBatch(events=[interest(run, i, f"own topic {i} {run}")]))
    await matcher.apply(EventBatch(events=[interest(run, 0, f"help {run}", "seeks")]))
    await matcher.apply(EventBatch(events=[interest(run, 1, f"help {run}", "offers")]))
    assert [f["ids"] for f in await proposals_for(pool, run)] == [[f"{run}-0", f"{run}-1"]]
    contact_id = await pool.fetchval(
        "SELECT contact_id FROM matcher.identities WHERE source = 't' AND external_id = $1",
        f"{run}-0",
    )

    round_id = uuid.uuid4()
    plan = [{"participants": [{"source": "t", "external_id": f"{run}-{i}"} for i in (0, 1)]}]
    await pool.execute(
        "INSERT INTO matcher.rounds (id, pool, group_size, seed, serendipity, dry_run, status, "
        "plan) VALUES ($1, 'everyone', 2, 0, 0, true, 'done', $2::text::jsonb)",
        round_id,
        json.dumps(plan),
    )

    await matcher.apply(EventBatch(events=[_erasure(run, 0)]))

    stored_plan = await pool.fetchval("SELECT plan FROM matcher.rounds WHERE id = $1", round_id)
    assert stored_plan[0]["participants"] == [
        {"source": ERASED, "external_id": ERASED},
        {"source": "t", "external_id": f"{run}-1"},
    ]

    # The proposal not yet relayed is gone; the stored one names them no more.
    assert await proposals_for(pool, run) == []
    topics = await pool.fetchval(
        "SELECT p.topics FROM matcher.proposals p JOIN matcher.proposal_participants pp "
        "ON pp.proposal_id = p.id WHERE pp.contact_id = $1",
        contact_id,
    )
    assert f"{run}-0" not in json.dumps(topics)
    assert topics[0]["seeker"] == {"source": ERASED, "external_id": ERASED}
    row = await pool.fetchrow("SELECT * FROM matcher.contacts WHERE id = $1", contact_id)
    assert row["name"] is None and row["channels"] == [] and row["opted_out"]
    assert not row["deliverable"] and row["erased_at"] is not None
    assert not await pool.fetchval(
        "SELECT count(*) FROM matcher.interests WHERE contact_id = $1", contact_id
    )
    people = await pool.fetchval("SELECT people FROM matcher.topics WHERE name = $1", f"help {run}")
    assert people == 1

    # Published before the erasure, applied after: dropped, no identity comes back.
    late = InterestDeclared(
        source="ingest",
        correlation_id=f"c-{run}",
        occurred_at=before,
        data=InterestData(source="t", external_id=f"{run}-0", topic=f"own topic 2 {run}"),
    )
    await matcher.apply(EventBatch(events=[late]))
    await matcher.apply(EventBatch(events=[contact(run, 0, at=before)]))
    assert not await pool.fetchval(
        "SELECT count(*) FROM matcher.identities WHERE source = 't' AND external_id = $1",
        f"{run}-0",
    )
    assert await proposals_for(pool, run) == []


async def test_notifier_erasure_forgets_people_it_never_heard_of(pool: asyncpg.Pool) -> None:
    store = NotifierStore(pool)
    run = uuid.uuid4().hex[:8]
    async with store.unit_of_work() as uow:
        await uow.people.erase("t", f"{run}-9", datetime.now(UTC))
    async with store.unit_of_work() as uow:
        assert await uow.people.erased([("t", f"{run}-9"), ("t", f"{run}-8")]) == {
            ("t", f"{run}-9")
        }


def _people_requests(notifier: Notifier) -> PeopleRequests:
    return PeopleRequests(NotifierStore(notifier.pool), notifier.answers)


async def test_opt_out_via_ingest_stops_an_introduction_whose_asks_are_out(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    run = uuid.uuid4().hex[:8]
    with smtp_sink() as sink:
        notifier = _notifier(pool, settings, sink, double_opt_in=True, start=NOON)
        proposal = _proposal(_person(run, 0), _person(run, 1))
        await notifier.intake.apply(EventBatch(events=[proposal]))
        await notifier.run_jobs()
        assert [len(sink.to(f"p{i}.{run}@example.org")) for i in range(2)] == [1, 1]
        opt_out = ContactOptedOut(
            source="ingest",
            correlation_id="c",
            data=OptOutData(source="t", external_id=f"{run}-0", reason="request"),
        )
        await _people_requests(notifier).apply(EventBatch(events=[opt_out]))
        await _people_requests(notifier).apply(EventBatch(events=[opt_out]))  # redelivered
        await notifier.answers.answer(_answer_link(notifier, proposal, 1, LinkAction.ACCEPT))
        await notifier.answers.answer(_answer_link(notifier, proposal, 0, LinkAction.ACCEPT))
        await notifier.run_jobs(include_delayed=True)
        assert [len(sink.to(f"p{i}.{run}@example.org")) for i in range(2)] == [1, 1]
        state = await pool.fetchval(
            "SELECT state FROM notifier.intros WHERE id = $1", proposal.data.proposal_id
        )
        assert state == "declined"


async def test_notifier_erasure_scrubs_an_open_introduction_and_a_late_proposal(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    run = uuid.uuid4().hex[:8]
    with smtp_sink() as sink:
        notifier = _notifier(pool, settings, sink, double_opt_in=True, start=NOON)
        proposal = _proposal(_person(run, 0), _person(run, 1), seeker=0)
        await notifier.intake.apply(EventBatch(events=[proposal]))
        await notifier.run_jobs()
        await _people_requests(notifier).apply(EventBatch(events=[_erasure(run, 0)]))
        await notifier.answers.answer(_answer_link(notifier, proposal, 1, LinkAction.ACCEPT))
        await notifier.run_jobs(include_delayed=True)
        # Raced the erasure: an unsubscribe and a proposal from before, arriving after.
        late_opt_out = ContactOptedOut(
            source="notifier",
            correlation_id="c",
            data=OptOutData(source="t", external_id=f"{run}-0"),
        )
        await _people_requests(notifier).apply(EventBatch(events=[late_opt_out]))
        late = _proposal(_person(run, 0), _person(run, 2))
        await notifier.intake.apply(EventBatch(events=[late]))
        await notifier.run_jobs(include_delayed=True)
        assert sink.to(f"p2.{run}@example.org") == []
        assert len(sink.to(f"p1.{run}@example.org")) <= 1  # at most the ask, no introduction
        for table in ("intros", "intro_seats", "deliveries", "opt_outs"):
            text = await pool.fetchval(
                f"SELECT string_agg(t::text, ' ') FROM notifier.{table} t"  # noqa: S608
            )
            assert f"{run}-0" not in (text or "") and f"p0.{run}@" not in (text or ""), table
        states = await pool.fetch(
            "SELECT state FROM notifier.intros WHERE id = ANY($1::uuid[])",
            [proposal.data.proposal_id, late.data.proposal_id],
        )
        assert {r["state"] for r in states} == {"declined"}


async def test_matcher_erasure_takes_the_person_out_of_block_lists_others_declared(
    pool: asyncpg.Pool,
) -> None:
    matcher = MatcherService(
        MatcherStore(pool), MatchingPolicy(min_score=0.1, candidates_per_topic=50)
    )
    run = uuid.uuid4().hex[:8]
    await matcher.apply(EventBatch(events=[contact(run, i) for i in range(3)]))
    # Person 0's own contact event lists persons 1 and 2 among those they block.
    declared = contact(run, 0)
    blocks = [ContactRef(source="t", external_id=f"{run}-{i}") for i in (1, 2)]
    blocking = declared.model_copy(
        update={"data": declared.data.model_copy(update={"blocks": blocks})}
    )
    await matcher.apply(EventBatch(events=[blocking]))
    await matcher.apply(EventBatch(events=[_erasure(run, 1)]))

    profile = await pool.fetchval(
        "SELECT profile FROM matcher.identities WHERE source = 't' AND external_id = $1",
        f"{run}-0",
    )
    listed = json.loads(profile)["blocks"] if isinstance(profile, str) else profile["blocks"]
    assert listed == [{"source": "t", "external_id": f"{run}-2"}]
    assert f"{run}-1" not in str(profile)
