"""Rounds over a pool, against the real PostgreSQL: coverage, odd sizes, replay, constraints,
complementary matching and group sizes. Each test selects its own people by a tag of its own."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from datetime import UTC, datetime, time
from typing import Any

import asyncpg
import pytest

from services.matcher.rounds import InvalidPool, PoolSpec, RoundPolicy, Rounds
from services.matcher.schedules import WeeklySchedule
from services.matcher.service import MatcherService, MatchingPolicy
from services.matcher.store import MatcherStore
from services.matcher.store.rows import RoundRow
from shared.events import EventBatch, IntroProposed, decode_batch, decode_event
from tests.integration.test_matcher_constraints import likes, person
from tests.support.clock import FakeClock


@pytest.fixture
def matcher(pool: asyncpg.Pool) -> MatcherService:
    # A high live threshold: these tests load people without live introductions in between.
    return MatcherService(
        MatcherStore(pool), MatchingPolicy(min_score=1_000.0, candidates_per_topic=50)
    )


@pytest.fixture
def rounds(pool: asyncpg.Pool) -> Rounds:
    return Rounds(MatcherStore(pool), RoundPolicy(cap_per_week=10))


async def load(
    matcher: MatcherService,
    run: str,
    interests: dict[int, list[str]],
    organizations: dict[int, str] | None = None,
    kinds: dict[tuple[int, str], str] | None = None,
) -> None:
    organizations = organizations or {}
    kinds = kinds or {}
    await matcher.apply(
        EventBatch(
            events=[
                person(run, i, tags=(f"r{run}",), organization=organizations.get(i))
                for i in interests
            ]
        )
    )
    events = [
        likes(run, i, f"{t} {run}", kinds.get((i, t), "likes"))
        for i, topics in interests.items()
        for t in topics
    ]
    await matcher.apply(EventBatch(events=events))


async def run_round(rounds: Rounds, run: str, **kwargs: Any) -> RoundRow:
    await rounds.save_pool(PoolSpec(name=f"p{run}", selector={"tags": [f"r{run}"]}))
    requested = await rounds.request(f"p{run}", **kwargs)
    while await rounds.run_next():
        pass
    done = await rounds.get(requested.id)
    assert done is not None
    assert done.status == "done", done.error
    return done


async def groups_of(rounds: Rounds, round_id: uuid.UUID) -> list[list[str]]:
    intros = await rounds.proposals(round_id, 1000, None)
    return sorted(sorted(p["external_id"] for p in i["participants"]) for i in intros)


def _run() -> str:
    return uuid.uuid4().hex[:8]


async def test_a_round_places_everyone_with_the_partner_who_shares_most(
    matcher: MatcherService, rounds: Rounds
) -> None:
    run = _run()
    # Four pairs, each sharing a topic only they hold, plus a topic everyone holds.
    await load(matcher, run, {i: [f"pair{i // 2}", "common"] for i in range(8)})
    done = await run_round(rounds, run, seed=7)
    assert done.stats is not None
    assert done.stats["coverage"] == 1.0
    assert done.stats["groups"] == 4
    assert await groups_of(rounds, done.id) == [
        [f"{run}-{i}", f"{run}-{i + 1}"] for i in range(0, 8, 2)
    ]
    intro = (await rounds.proposals(done.id, 1, None))[0]
    assert intro["reason"].startswith("You both care about pair")


async def test_an_odd_person_joins_a_group_of_three(
    matcher: MatcherService, rounds: Rounds
) -> None:
    run = _run()
    await load(matcher, run, {i: ["common"] for i in range(7)})
    done = await run_round(rounds, run, seed=1)
    groups = await groups_of(rounds, done.id)
    assert sorted(len(g) for g in groups) == [2, 2, 3]
    assert done.stats is not None
    assert done.stats["coverage"] == 1.0


async def test_the_same_seed_replays_the_same_round(
    matcher: MatcherService, rounds: Rounds
) -> None:
    run = _run()
    await load(matcher, run, {i: ["common", f"t{i % 3}", f"u{i % 4}"] for i in range(24)})
    first = await run_round(rounds, run, seed=42, serendipity=1.0, dry_run=True)
    again = await run_round(rounds, run, seed=42, serendipity=1.0, dry_run=True)
    other = await run_round(rounds, run, seed=43, serendipity=1.0, dry_run=True)
    assert first.plan is not None
    assert first.plan == again.plan
    assert other.plan != first.plan
    real = await run_round(rounds, run, seed=42, serendipity=1.0)
    planned = sorted(sorted(p["external_id"] for p in g["participants"]) for g in first.plan)
    assert await groups_of(rounds, real.id) == planned


async def test_successive_rounds_never_repeat_a_group(
    matcher: MatcherService, rounds: Rounds
) -> None:
    run = _run()
    await load(matcher, run, {i: ["common", f"t{i % 2}"] for i in range(12)})
    seen: set[tuple[str, ...]] = set()
    for seed in range(5):
        done = await run_round(rounds, run, seed=seed)
        for group in await groups_of(rounds, done.id):
            assert tuple(group) not in seen
            seen.add(tuple(group))
    assert len(seen) >= 20


async def test_a_round_respects_organisations_and_reports_who_it_could_not_place(
    matcher: MatcherService, rounds: Rounds
) -> None:
    run = _run()
    # Three colleagues and one outsider: the outsider meets one colleague (or two as a triple);
    # a colleague who can only meet colleagues is reported, not dropped silently.
    await load(
        matcher,
        run,
        {0: ["x"], 1: ["x"], 2: ["x"], 3: ["x"], 4: []},
        organizations={0: "Acme", 1: "Acme", 2: "Acme"},
    )
    done = await run_round(rounds, run, seed=3)
    groups = await groups_of(rounds, done.id)
    assert len(groups) == 1
    assert f"{run}-3" in groups[0]
    assert sum(f"{run}-{i}" in groups[0] for i in range(3)) == 1
    assert done.stats is not None
    reasons = {u["external_id"]: u["reason"] for u in done.stats["unplaced_sample"]}
    assert reasons[f"{run}-4"] == "has declared no interests"
    assert len(reasons) == 3


async def test_seekers_meet_offerers_in_a_round(matcher: MatcherService, rounds: Rounds) -> None:
    run = _run()
    await load(
        matcher,
        run,
        {0: ["rust"], 1: ["rust"], 2: ["rust"], 3: ["rust"]},
        kinds={
            (0, "rust"): "seeks",
            (1, "rust"): "seeks",
            (2, "rust"): "offers",
            (3, "rust"): "offers",
        },
    )
    done = await run_round(rounds, run, seed=5)
    groups = await groups_of(rounds, done.id)
    assert len(groups) == 2
    for group in groups:
        # one seeker and one offerer in every pair; two seekers are never an answer
        assert sum(g in (f"{run}-0", f"{run}-1") for g in group) == 1


async def test_groups_of_four(matcher: MatcherService, rounds: Rounds) -> None:
    run = _run()
    await load(matcher, run, {i: ["common", f"t{i % 2}"] for i in range(8)})
    done = await run_round(rounds, run, seed=9, group_size=4)
    groups = await groups_of(rounds, done.id)
    assert [len(g) for g in groups] == [4, 4]
    intro = (await rounds.proposals(done.id, 1, None))[0]
    assert "all care about" in intro["reason"]


@pytest.mark.parametrize("people", [13, 19, 25])
async def test_groups_of_six_never_make_a_seven(
    matcher: MatcherService, rounds: Rounds, people: int
) -> None:
    # One over a multiple of six: the leftover once joined a full group.
    run = _run()
    await load(matcher, run, {i: ["common", f"t{i % 3}"] for i in range(people)})
    done = await run_round(rounds, run, seed=3, group_size=6)
    sizes = sorted(len(g) for g in await groups_of(rounds, done.id))
    assert sum(sizes) == people, sizes  # everyone placed ...
    assert max(sizes) <= 6 and min(sizes) >= 2, sizes  # ... and no group above six
    assert done.stats is not None
    assert max(int(size) for size in done.stats["group_sizes"]) <= 6
    assert done.stats["unplaced"] == 0


async def test_snoozed_and_capped_people_sit_a_round_out(
    matcher: MatcherService, rounds: Rounds, pool: asyncpg.Pool
) -> None:
    run = _run()
    await load(matcher, run, {i: ["common"] for i in range(4)})
    await pool.execute(
        "UPDATE matcher.contacts SET snoozed_until = now() + interval '1 day' WHERE id = "
        "(SELECT contact_id FROM matcher.identities WHERE source = 't' AND external_id = $1)",
        f"{run}-0",
    )
    capped = Rounds(MatcherStore(pool), RoundPolicy(cap_per_week=1))
    first = await run_round(capped, run, seed=1)
    assert first.stats is not None
    assert first.stats["unavailable"] == 1
    assert first.stats["groups"] == 1
    # The paused person is listed as left out, with the day the pause ends.
    until = await pool.fetchval(
        "SELECT (snoozed_until AT TIME ZONE 'UTC')::date::text FROM matcher.contacts WHERE id = "
        "(SELECT contact_id FROM matcher.identities WHERE source = 't' AND external_id = $1)",
        f"{run}-0",
    )
    reasons = {u["external_id"]: u["reason"] for u in first.stats["unplaced_sample"]}
    assert reasons[f"{run}-0"] == f"paused until {until}"
    assert first.stats["unavailable_reasons"] == {"paused": 1}
    assert first.stats["unplaced"] == 0  # the other three meet as a triple
    assert first.stats["left_out"] == 1
    second = await run_round(capped, run, seed=2)
    assert second.stats is not None
    assert second.stats["groups"] == 0  # everyone available already had their one this week
    reasons = {u["external_id"]: u["reason"] for u in second.stats["unplaced_sample"]}
    assert all(reasons[f"{run}-{i}"] == "weekly cap reached" for i in range(1, 4))
    assert second.stats["unavailable_reasons"] == {"paused": 1, "weekly cap reached": 3}


async def test_an_opted_out_member_is_left_out_with_the_reason(
    matcher: MatcherService, rounds: Rounds, pool: asyncpg.Pool
) -> None:
    run = _run()
    await load(matcher, run, {i: ["common"] for i in range(3)})
    await pool.execute(
        "UPDATE matcher.contacts SET opted_out = true WHERE id = "
        "(SELECT contact_id FROM matcher.identities WHERE source = 't' AND external_id = $1)",
        f"{run}-2",
    )
    done = await run_round(rounds, run, seed=4)
    assert done.stats is not None
    assert done.stats["pool_members"] == 3
    assert done.stats["groups"] == 1
    reasons = {u["external_id"]: u["reason"] for u in done.stats["unplaced_sample"]}
    assert reasons == {f"{run}-2": "opted out"}


async def test_a_pool_on_a_schedule_gets_its_rounds_without_being_asked(
    matcher: MatcherService, rounds: Rounds, pool: asyncpg.Pool
) -> None:
    run = _run()
    await load(matcher, run, {i: ["common"] for i in range(4)})
    await rounds.save_pool(
        PoolSpec(name=f"p{run}", selector={"tags": [f"r{run}"]}, every_seconds=86_400)
    )
    # An interval's first round is due at once, not a period later.
    assert await rounds.schedule_due(seed=11) >= 1
    assert await rounds.schedule_due(seed=12) == 0  # moved on by a day: not due
    while await rounds.run_next():
        pass
    row = await pool.fetchrow(
        "SELECT status, seed, stats FROM matcher.rounds WHERE pool = $1", f"p{run}"
    )
    assert row["status"] == "done"
    assert row["seed"] == 11
    assert row["stats"]["groups"] == 2
    next_at = await pool.fetchval(
        "SELECT next_round_at - now() FROM matcher.pools WHERE name = $1", f"p{run}"
    )
    assert next_at.total_seconds() > 86_000


class ReadClock(FakeClock):
    """A clock the test sets, which counts how often the matcher read it."""

    def __init__(self, start: datetime) -> None:
        super().__init__(start)
        self.reads = 0

    def now(self) -> datetime:
        self.reads += 1
        return super().now()

    async def seen(self, reads: int = 2) -> None:
        """Until the round loop has read the time set `reads` more times: with nothing to
        run, each of its passes reads it once, and a pass commits before the next begins."""
        target = self.reads + reads
        async with asyncio.timeout(10):
            while self.reads < target:
                await asyncio.sleep(0.005)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


BERLIN_MONDAYS_AT_9 = WeeklySchedule.from_json(
    {"weekdays": ["mon"], "at": "09:00", "timezone": "Europe/Berlin"}
)


async def _rounds_of(pool: asyncpg.Pool, name: str, count: int) -> list[asyncpg.Record]:
    """The pool's rounds once `count` of them finished (within 30 s)."""
    async with asyncio.timeout(30):
        while True:
            rows: list[asyncpg.Record] = await pool.fetch(
                "SELECT status, stats FROM matcher.rounds WHERE pool = $1 ORDER BY requested_at",
                name,
            )
            if sum(r["status"] in ("done", "failed") for r in rows) >= count:
                return rows
            await asyncio.sleep(0.02)


async def test_the_round_loop_runs_mondays_at_nine_in_berlin_across_spring_forward(
    matcher: MatcherService, pool: asyncpg.Pool
) -> None:
    """The real polling loop (`run_forever`) as a task, with a clock the test moves: 09:00 in
    Berlin is 08:00 UTC before 2027-03-28 and 07:00 UTC after it."""
    run = _run()
    name = f"p{run}"
    await load(matcher, run, {i: ["common"] for i in range(4)})
    clock = ReadClock(utc(2027, 3, 19, 12))  # a Friday
    rounds = Rounds(MatcherStore(pool), RoundPolicy(cap_per_week=10, poll_seconds=0.01), clock)
    saved, _ = await rounds.save_pool(
        PoolSpec(name=name, selector={"tags": [f"r{run}"]}, schedule=BERLIN_MONDAYS_AT_9)
    )
    # The first round at the first slot after the pool was saved: the coming Monday.
    assert saved.next_round_at == utc(2027, 3, 22, 8)
    assert saved.schedule is not None and saved.schedule["starting"] == "2027-03-22"
    loop = asyncio.create_task(rounds.run_forever())
    try:
        clock.set(utc(2027, 3, 22, 7, 59, 59))
        await clock.seen()
        assert await pool.fetchval("SELECT count(*) FROM matcher.rounds WHERE pool = $1", name) == 0
        clock.set(utc(2027, 3, 22, 8))
        first = await _rounds_of(pool, name, 1)
        assert [r["status"] for r in first] == ["done"]
        assert first[0]["stats"]["groups"] == 2
        next_at = await pool.fetchval(
            "SELECT next_round_at FROM matcher.pools WHERE name = $1", name
        )
        assert next_at == utc(2027, 3, 29, 7)  # still 09:00 in Berlin, now summer time

        # Not at 08:00 UTC, when the round was due last week; at 07:00 UTC, 09:00 CEST.
        clock.set(utc(2027, 3, 29, 6, 59, 59))
        await clock.seen()
        assert await pool.fetchval("SELECT count(*) FROM matcher.rounds WHERE pool = $1", name) == 1
        clock.set(utc(2027, 3, 29, 7))
        second = await _rounds_of(pool, name, 2)
        assert [r["status"] for r in second] == ["done", "done"]
        next_at = await pool.fetchval(
            "SELECT next_round_at FROM matcher.pools WHERE name = $1", name
        )
        assert next_at == utc(2027, 4, 5, 7)
        # A poll later in the same slot requests nothing more.
        await clock.seen()
        assert await pool.fetchval("SELECT count(*) FROM matcher.rounds WHERE pool = $1", name) == 2
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop


async def test_replacing_a_pool_keeps_its_schedule_unless_it_changes(pool: asyncpg.Pool) -> None:
    clock = FakeClock(utc(2027, 3, 16, 12))  # a Tuesday
    rounds = Rounds(MatcherStore(pool), RoundPolicy(), clock)
    name = f"p{_run()}"
    every_other = dataclasses.replace(BERLIN_MONDAYS_AT_9, every_weeks=2)
    saved, created = await rounds.save_pool(PoolSpec(name=name, schedule=every_other))
    assert created
    assert saved.next_round_at == utc(2027, 3, 22, 8)
    assert saved.schedule is not None and saved.schedule["starting"] == "2027-03-22"
    # Saved again with the same schedule a week later: the round due and the weeks counted stay.
    clock.set(utc(2027, 3, 23, 12))
    again, created = await rounds.save_pool(PoolSpec(name=name, schedule=every_other, group_size=3))
    assert not created
    assert (again.next_round_at, again.schedule) == (saved.next_round_at, saved.schedule)
    # Another time of day: a new schedule, from its first slot after now.
    at_ten = dataclasses.replace(every_other, at=time(10, 0))
    moved, _ = await rounds.save_pool(PoolSpec(name=name, schedule=at_ten))
    assert moved.next_round_at == utc(2027, 3, 29, 8)
    assert moved.schedule is not None and moved.schedule["starting"] == "2027-03-29"
    # An interval instead: its first round at once. No schedule: none.
    daily, _ = await rounds.save_pool(PoolSpec(name=name, every_seconds=86_400))
    assert (daily.next_round_at, daily.schedule) == (clock.now(), None)
    never, _ = await rounds.save_pool(PoolSpec(name=name))
    assert never.next_round_at is None
    with pytest.raises(InvalidPool):
        await rounds.save_pool(PoolSpec(name=name, every_seconds=60, schedule=every_other))


async def test_a_pools_checkin_delay_travels_with_its_introductions(
    matcher: MatcherService, rounds: Rounds, pool: asyncpg.Pool
) -> None:
    run = _run()
    await load(matcher, run, {i: ["common"] for i in range(4)})
    saved, _ = await rounds.save_pool(
        PoolSpec(name=f"p{run}", selector={"tags": [f"r{run}"]}, checkin_after_days=3)
    )
    assert saved.checkin_after_days == 3
    requested = await rounds.request(f"p{run}", seed=1)
    while await rounds.run_next():
        pass
    correlation = f"round-{requested.id}"
    bodies = await pool.fetch(
        "SELECT body FROM messaging.outbox WHERE correlation_id = $1", correlation
    )
    assert len(bodies) == 2
    for row in bodies:
        body = bytes(row["body"])
        events = decode_batch(body).events if b'"events"' in body[:20] else [decode_event(body)]
        [event] = events
        assert isinstance(event, IntroProposed)
        assert event.data.checkin_after_seconds == 3 * 86400
