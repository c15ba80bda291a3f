"""What erasure leaves behind, against the real PostgreSQL: links of an erased person do
nothing (answers, check-ins and the preferences page, through the public pages), tombstones
are HMACs under the server key (legacy SHA-256 rows still recognised and replaced), round
statistics and plans are scrubbed whatever the id's characters, and old inbox rows are
pruned."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx

from services.matcher.store import MatcherStore
from services.notifier.answers import Outcome
from services.notifier.app import public_app
from services.notifier.checkin_service import LINK_SECONDS, CheckIns
from services.notifier.checkins import CheckinState
from services.notifier.links import LinkAction, LinkClaim, LinkKeyring
from services.notifier.people import PeopleRequests
from services.notifier.planning import QuietHours
from services.notifier.preference_changes import PreferenceChanges
from services.notifier.store.uow import NotifierStore
from shared import inbox
from shared.erasure import ERASED, erasure_digest, legacy_digest
from shared.events import ContactErased, ErasureData, EventBatch
from shared.metrics import INBOX_PRUNED
from shared.settings import Settings
from tests.integration.test_notifier_service import (
    NOON,
    SECRET,
    Notifier,
    _answer_link,
    _notifier,
    _person,
    _proposal,
)
from tests.support.infra import ERASURE_KEY
from tests.support.smtp_sink import smtp_sink

KEY = ERASURE_KEY.encode()
CHECKIN_AFTER = timedelta(hours=1)
# The notifier's tables that hold people's ids (check-ins hold a seat's position only).
NAMING_TABLES = ("intros", "intro_seats", "deliveries", "opt_outs", "preferences", "checkins")


def _erasure(source: str, external_id: str) -> ContactErased:
    return ContactErased(
        source="ingest",
        correlation_id="c-erase",
        data=ErasureData(source=source, external_id=external_id),
    )


async def test_every_link_of_an_erased_person_changes_stores_and_publishes_nothing(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    run = uuid.uuid4().hex[:8]
    with smtp_sink() as sink:
        notifier = _notifier(pool, settings, sink, double_opt_in=True, start=NOON)
        proposal = _proposal(_person(run, 0), _person(run, 1))
        await notifier.intake.apply(EventBatch(events=[proposal]))
        await notifier.run_jobs()
        person = proposal.data.participants[0]
        links = {
            action: _answer_link(notifier, proposal, 0, action)
            for action in (LinkAction.ACCEPT, LinkAction.DECLINE)
        }
        unsubscribe = notifier.links.unsubscribe(
            person.source, person.external_id, notifier.clock.now().timestamp()
        ).rsplit("/", 1)[1]
        people = PeopleRequests(NotifierStore(pool), notifier.answers)
        await people.apply(EventBatch(events=[_erasure(person.source, person.external_id)]))
        outbox_before = await pool.fetchval("SELECT count(*) FROM messaging.outbox")

        for token in (unsubscribe, links[LinkAction.ACCEPT], links[LinkAction.DECLINE]):
            assert (await notifier.answers.inspect(token)).outcome is Outcome.ERASED  # type: ignore[union-attr]
            assert (await notifier.answers.answer(token)).outcome is Outcome.ERASED
        assert (await notifier.answers.answer(unsubscribe)).outcome is Outcome.ERASED  # twice

        assert await pool.fetchval("SELECT count(*) FROM messaging.outbox") == outbox_before
        assert not await pool.fetchval(
            "SELECT count(*) FROM notifier.opt_outs WHERE external_id = $1", person.external_id
        )
        for table in ("intros", "intro_seats", "deliveries", "opt_outs"):
            text = await pool.fetchval(
                f"SELECT string_agg(t::text, ' ') FROM notifier.{table} t"  # noqa: S608
            )
            assert person.external_id not in (text or ""), table


def _public_pages(notifier: Notifier, pool: asyncpg.Pool) -> tuple[httpx.AsyncClient, CheckIns]:
    """The notifier's public pages as the process serves them (links, check-ins, preferences),
    on the test's clock and link key, and a client for them."""
    keyring = LinkKeyring.single(SECRET)
    store = NotifierStore(pool)
    checkins = CheckIns(
        store,
        keyring=keyring,
        links=notifier.links,
        after=CHECKIN_AFTER,
        quiet=QuietHours(enabled=False, start=21, end=8, fallback_timezone="UTC"),
        clock=notifier.clock,
    )
    # No matcher to read channels and interests back from: the page shows the rest.
    preferences = PreferenceChanges(store, keyring=keyring, clock=notifier.clock, operator_cap=3)
    app = public_app(notifier.answers, None, preferences)
    app.state.checkins = checkins
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://roac.test",
        headers={"Accept-Language": "en"},
    )
    return client, checkins


async def _nothing_names(pool: asyncpg.Pool, external_id: str) -> None:
    for table in NAMING_TABLES:
        text = await pool.fetchval(
            f"SELECT string_agg(t::text, ' ') FROM notifier.{table} t"  # noqa: S608
        )
        assert external_id not in (text or ""), table
    bodies = await pool.fetchval(
        "SELECT string_agg(convert_from(body, 'UTF8'), ' ') FROM messaging.outbox"
    )
    assert external_id not in (bodies or ""), "outbox"


async def test_every_checkin_link_of_an_erased_person_changes_stores_and_publishes_nothing(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    run = uuid.uuid4().hex[:8]
    with smtp_sink() as sink:
        notifier = _notifier(pool, settings, sink, double_opt_in=False, start=NOON)
        proposal = _proposal(_person(run, 0), _person(run, 1))
        await notifier.intake.apply(EventBatch(events=[proposal]))
        await notifier.run_jobs()
        client, checkins = _public_pages(notifier, pool)
        intro_id = proposal.data.proposal_id
        # "Did you meet?" is asked once its time came (introduced_at is the database's clock).
        notifier.clock.set(datetime.now(UTC) + CHECKIN_AFTER + timedelta(minutes=1))
        await checkins.send_due()
        states = "SELECT state FROM notifier.checkins WHERE intro_id = $1 ORDER BY position"
        assert [r["state"] for r in await pool.fetch(states, intro_id)] == [
            CheckinState.SENT.value
        ] * 2
        person = proposal.data.participants[0]
        expires = int(notifier.clock.now().timestamp()) + LINK_SECONDS
        tokens = {
            action: notifier.links.url(
                LinkClaim(action, person.source, person.external_id, expires, intro_id)
            ).rsplit("/", 1)[1]
            for action in (
                LinkAction.CHECKIN_MET,
                LinkAction.CHECKIN_NOT_YET,
                LinkAction.CHECKIN_DIDNT_HAPPEN,
                LinkAction.CHECKIN_NOT_FOR_ME,
                LinkAction.CHECKIN_RATE,
            )
        }
        for token in tokens.values():  # each would act, but for the erasure
            assert isinstance(await checkins.inspect(token), LinkClaim)

        people = PeopleRequests(NotifierStore(pool), notifier.answers)
        await people.apply(EventBatch(events=[_erasure(person.source, person.external_id)]))
        checkins_before = await pool.fetch("SELECT * FROM notifier.checkins ORDER BY 1, 2")
        outbox_before = await pool.fetchval("SELECT count(*) FROM messaging.outbox")

        async with client:
            for action, token in tokens.items():
                form = {"rating": "5"} if action is LinkAction.CHECKIN_RATE else {}
                path = f"/links/{token}"
                # The confirmation page, the button, and the button again.
                for page in (
                    await client.get(path),
                    await client.post(path, data=form),
                    await client.post(path, data=form),
                ):
                    assert page.status_code == 200, (action, page.text)
                    assert "Nothing more to do" in page.text, action
                    assert "<form" not in page.text, action  # no button, no rating form
                    assert person.external_id not in page.text
                assert (await checkins.answer(token, 5)).outcome == "erased"

    assert await pool.fetch("SELECT * FROM notifier.checkins ORDER BY 1, 2") == checkins_before
    assert await pool.fetchval("SELECT count(*) FROM messaging.outbox") == outbox_before
    await _nothing_names(pool, person.external_id)


async def test_the_preferences_page_of_an_erased_person_shows_changes_and_publishes_nothing(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    run = uuid.uuid4().hex[:8]
    with smtp_sink() as sink:
        notifier = _notifier(pool, settings, sink, double_opt_in=False, start=NOON)
    client, _ = _public_pages(notifier, pool)
    erased, kept = _person(run, 0), _person(run, 1)
    now = notifier.clock.now().timestamp()
    paths = {
        p.external_id: "/preferences/"
        + notifier.links.preferences(p.source, p.external_id, now).rsplit("/", 1)[1]
        for p in (erased, kept)
    }
    forms = [
        {"pause": "2", "per_week": "1", "language": "de"},
        {"interest_action": "add", "topic": "kites", "kind": "likes"},
        {"opt_in": "yes"},
    ]
    async with client:
        shown = await client.get(paths[erased.external_id])
        assert shown.status_code == 200 and "<form" in shown.text  # their page, until erased
        # Unsubscribed before the erasure: an opt-in would otherwise store and publish.
        unsubscribe = notifier.links.unsubscribe(erased.source, erased.external_id, now)
        assert (await client.post("/links/" + unsubscribe.rsplit("/", 1)[1])).status_code == 200
        people = PeopleRequests(NotifierStore(pool), notifier.answers)
        await people.apply(EventBatch(events=[_erasure(erased.source, erased.external_id)]))
        outbox_before = await pool.fetchval("SELECT count(*) FROM messaging.outbox")

        path = paths[erased.external_id]
        pages = [await client.get(path)]
        for form in forms:
            pages.append(await client.post(path, data=form))
        pages.append(await client.get(path + "?saved=1"))
        for page in pages:
            assert page.status_code == 200, page.text  # not 303: nothing was saved
            assert "Nothing to show" in page.text
            assert "<form" not in page.text
            assert erased.external_id not in page.text
        assert await pool.fetchval("SELECT count(*) FROM messaging.outbox") == outbox_before
        await _nothing_names(pool, erased.external_id)

        # The same forms from someone not erased are stored and published: the ones above
        # would have been too.
        for form in forms[:2]:
            answer = await client.post(paths[kept.external_id], data=form)
            assert answer.status_code == 303, answer.text
    assert await pool.fetchval(
        "SELECT count(*) FROM notifier.preferences WHERE external_id = $1", kept.external_id
    )
    published = await pool.fetch(
        "SELECT routing_key FROM messaging.outbox WHERE convert_from(body, 'UTF8') LIKE $1",
        f"%{kept.external_id}%",
    )
    assert {r["routing_key"] for r in published} >= {
        "contact.preferences_changed.v1",
        "interest.declared.v1",
    }


async def test_an_unsubscribe_before_erasure_publishes_no_identifier_in_its_correlation_id(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    run = uuid.uuid4().hex[:8]
    with smtp_sink() as sink:
        notifier = _notifier(pool, settings, sink, double_opt_in=True, start=NOON)
        person = _person(run, 0)
        token = notifier.links.unsubscribe(
            person.source, person.external_id, notifier.clock.now().timestamp()
        ).rsplit("/", 1)[1]
        assert (await notifier.answers.answer(token)).outcome is Outcome.UNSUBSCRIBED
        rows = await pool.fetch(
            "SELECT correlation_id, convert_from(body, 'UTF8') AS body FROM messaging.outbox "
            "WHERE routing_key = 'contact.opted_out.v1' AND producer = 'notifier'"
        )
        mine = [r for r in rows if person.external_id in r["body"]]
        assert len(mine) == 1
        assert person.external_id not in mine[0]["correlation_id"]
        assert "t" not in mine[0]["correlation_id"].split("-")  # no source either
        await pool.execute("DELETE FROM messaging.outbox WHERE correlation_id = $1", mine[0][0])


async def test_tombstones_are_keyed_and_legacy_ones_still_count(pool: asyncpg.Pool) -> None:
    run = uuid.uuid4().hex[:8]
    keyed = NotifierStore(pool, erasure_key=KEY)
    async with keyed.unit_of_work() as uow:
        await uow.people.erase("t", f"{run}-k", datetime.now(UTC))
    row = await pool.fetchrow(
        "SELECT keyed FROM notifier.erasures WHERE digest = $1",
        erasure_digest("t", f"{run}-k", KEY),
    )
    assert row is not None and row["keyed"]
    assert not await pool.fetchval(
        "SELECT count(*) FROM notifier.erasures WHERE digest = $1", legacy_digest("t", f"{run}-k")
    )

    # Erased before ROAC_ERASURE_KEY existed: a plain SHA-256 row, as the migration kept it.
    for table in ("notifier.erasures", "matcher.erasures"):
        await pool.execute(
            f"INSERT INTO {table} (digest, erased_at, keyed) VALUES ($1, $2, false)",  # noqa: S608
            legacy_digest("t", f"{run}-old"),
            datetime.now(UTC) - timedelta(days=1),
        )
    async with keyed.unit_of_work() as uow:
        assert await uow.people.erased([("t", f"{run}-old"), ("t", f"{run}-new")]) == {
            ("t", f"{run}-old")
        }
    async with MatcherStore(pool, erasure_key=KEY).unit_of_work() as uow:
        erased = await uow.erasure.erased_refs(
            [(("t", f"{run}-old"), datetime.now(UTC) - timedelta(days=2))]
        )
        assert erased == {("t", f"{run}-old")}
    # Erased again: the legacy row gives way to a keyed one.
    async with keyed.unit_of_work() as uow:
        await uow.people.erase("t", f"{run}-old", datetime.now(UTC))
    digests = {
        bytes(r["digest"]): r["keyed"]
        for r in await pool.fetch(
            "SELECT digest, keyed FROM notifier.erasures WHERE digest = ANY($1::bytea[])",
            [legacy_digest("t", f"{run}-old"), erasure_digest("t", f"{run}-old", KEY)],
        )
    }
    assert digests == {erasure_digest("t", f"{run}-old", KEY): True}


async def test_round_statistics_and_plans_are_scrubbed_with_unicode_ids(pool: asyncpg.Pool) -> None:
    run = uuid.uuid4().hex[:8]
    erased_id = f"Zoë-{run}-東京-\U0001f600"
    kept_id = f"kept-{run}"
    store = MatcherStore(pool, erasure_key=KEY)
    contact_id = await pool.fetchval(
        "INSERT INTO matcher.contacts (name, deliverable) VALUES ($1, true) RETURNING id",
        f"Zoë {run}",
    )
    await pool.execute(
        "INSERT INTO matcher.identities (source, external_id, contact_id) VALUES ('t', $1, $2)",
        erased_id,
        contact_id,
    )
    stats = {
        "placed": 2,
        "unplaced_sample": [
            {"source": "t", "external_id": erased_id, "reason": "no candidate"},
            {"source": "t", "external_id": kept_id, "reason": "no candidate"},
        ],
    }
    plan = [
        {
            "participants": [
                {"source": "t", "external_id": erased_id},
                {"source": "t", "external_id": kept_id},
            ],
            "score": 1.0,
            "reason": "kites",
            "topics": ["kites"],
        }
    ]
    round_id = uuid.uuid4()
    await pool.execute(
        "INSERT INTO matcher.rounds (id, pool, group_size, seed, serendipity, dry_run, status, "
        "stats, plan) VALUES ($1, 'everyone', 2, 1, 0, true, 'done', $2::text::jsonb, "
        "$3::text::jsonb)",
        round_id,
        json.dumps(stats),  # ASCII-escaped JSON: jsonb stores the characters themselves
        json.dumps(plan, ensure_ascii=False),
    )
    async with store.unit_of_work() as uow:
        await uow.erasure.erase(("t", erased_id), datetime.now(UTC))
    row = await pool.fetchrow(
        "SELECT stats::text, plan::text FROM matcher.rounds WHERE id = $1", round_id
    )
    assert erased_id not in row["stats"] and erased_id not in row["plan"]
    assert "Zoë" not in row["stats"]
    assert kept_id in row["stats"] and kept_id in row["plan"]
    scrubbed = json.loads(row["stats"])["unplaced_sample"][0]
    assert scrubbed == {"source": ERASED, "external_id": ERASED, "reason": "no candidate"}


async def test_inbox_rows_older_than_the_window_are_pruned_in_batches(pool: asyncpg.Pool) -> None:
    consumer = f"prune-test-{uuid.uuid4().hex[:6]}"
    old = datetime.now(UTC) - timedelta(days=20)
    await pool.execute(
        "INSERT INTO messaging.inbox (consumer, message_id, received_at) "
        "SELECT $1, gen_random_uuid(), $2 FROM generate_series(1, 25)",
        consumer,
        old,
    )
    fresh = [uuid.uuid4() for _ in range(3)]
    async with pool.acquire() as conn:
        assert await inbox.claim_new(conn, consumer, fresh) == set(fresh)
    before = INBOX_PRUNED.labels(consumer)._value.get()
    pruner = inbox.InboxPruner(pool, consumer, retention=timedelta(days=15), interval=60)
    assert await inbox.prune(pool, consumer, datetime.now(UTC) - timedelta(days=15), batch=10) == 25
    assert await pruner.prune_once() == 0
    assert INBOX_PRUNED.labels(consumer)._value.get() - before == 25
    left = await pool.fetch("SELECT message_id FROM messaging.inbox WHERE consumer = $1", consumer)
    assert {r["message_id"] for r in left} == set(fresh)
    async with pool.acquire() as conn:  # still deduplicated within the window
        assert await inbox.claim_new(conn, consumer, fresh) == set()
