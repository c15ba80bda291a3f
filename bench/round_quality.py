"""Round quality on a planted-community population, and round speed at 100,000 people.

The population hides communities: everyone likes two of a few topics common to all, three of
their community's own topics, sometimes one of another community's (cross-talk); some people
seek and others offer one of a few skills, across communities; everyone belongs to one of many
organisations. A good pair is inside one community or a seek/offer match. Rounds run through
the real code path (`Rounds`: PostgreSQL snapshot, candidate graph, assignment, proposals and
outbox rows committed), five in a row, each a simulated week after the last (the weekly cap
applies as in production). Random pairing of the same people is the baseline.

    python -m bench.round_quality [--people 2000] [--rounds 5] [--speed-people 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import asyncpg

from services.database import migrate
from services.matcher.rounds import RoundPolicy, Rounds
from services.matcher.store import MatcherStore
from services.matcher.store.rows import RoundRow
from shared.db import create_pool
from shared.settings import Settings
from tests.support.infra import isolated_infra

# Loading a million people writes millions of indexed rows: beyond the pool's 60 s default.
LOAD_TIMEOUT = 1800
COMMUNITY_SIZE = 40
COMMON_TOPICS = 8
TOPICS_PER_COMMUNITY = 5
SKILLS = 20
ORGANISATIONS_PER_1000 = 60


@dataclass
class Person:
    community: int
    organization: str
    likes: list[str]
    seeks: list[str] = field(default_factory=list)
    offers: list[str] = field(default_factory=list)


def planted_population(people: int, seed: int) -> list[Person]:
    rng = random.Random(seed)
    communities = max(people // COMMUNITY_SIZE, 2)
    organisations = max(people * ORGANISATIONS_PER_1000 // 1000, 3)
    population = []
    for i in range(people):
        community = i % communities
        likes = rng.sample([f"common {t}" for t in range(COMMON_TOPICS)], 2)
        likes += rng.sample(
            [f"community {community} topic {t}" for t in range(TOPICS_PER_COMMUNITY)], 3
        )
        if rng.random() < 0.2:  # cross-talk
            other = rng.randrange(communities)
            likes.append(f"community {other} topic {rng.randrange(TOPICS_PER_COMMUNITY)}")
        person = Person(community, f"org {rng.randrange(organisations)}", sorted(set(likes)))
        roll = rng.random()
        if roll < 0.05:
            person.seeks.append(f"skill {rng.randrange(SKILLS)}")
        elif roll < 0.10:
            person.offers.append(f"skill {rng.randrange(SKILLS)}")
        population.append(person)
    return population


async def load(conn: asyncpg.Connection, population: list[Person]) -> None:
    """COPY the population straight into the matcher's tables (as a finished import would)."""
    topic_ids: dict[str, int] = {}
    holders: dict[str, set[int]] = {}
    interests = []
    for cid, person in enumerate(population, start=1):
        held = (("likes", person.likes), ("seeks", person.seeks), ("offers", person.offers))
        for kind, topics in held:
            for topic in topics:
                tid = topic_ids.setdefault(topic, len(topic_ids) + 1)
                holders.setdefault(topic, set()).add(cid)
                interests.append((cid, tid, kind, 1.0))
    await conn.copy_records_to_table(
        "contacts",
        schema_name="matcher",
        columns=["id", "name", "organization", "deliverable", "tags"],
        records=[
            (cid, f"Person {cid}", p.organization, True, ["bench"])
            for cid, p in enumerate(population, start=1)
        ],
        timeout=LOAD_TIMEOUT,
    )
    # (jsonb has no binary COPY encoder in asyncpg: one UPDATE sets everyone's channel.)
    await conn.execute(
        "UPDATE matcher.contacts SET channels = $1::text::jsonb",
        '[{"type": "email", "address": "bench@example.org"}]',
        timeout=LOAD_TIMEOUT,
    )
    await conn.copy_records_to_table(
        "identities",
        schema_name="matcher",
        columns=["source", "external_id", "contact_id"],
        records=[("bench", str(cid), cid) for cid in range(1, len(population) + 1)],
        timeout=LOAD_TIMEOUT,
    )
    await conn.copy_records_to_table(
        "topics",
        schema_name="matcher",
        columns=["id", "name", "people"],
        records=[(tid, name, len(holders[name])) for name, tid in topic_ids.items()],
    )
    now = time.time()
    await conn.execute(
        """
        CREATE TEMP TABLE staged (contact_id bigint, topic_id bigint, kind text, weight real)
        """
    )
    await conn.copy_records_to_table("staged", records=interests, timeout=LOAD_TIMEOUT)
    await conn.execute(
        """
        INSERT INTO matcher.interests (contact_id, topic_id, kind, weight, declared_at)
        SELECT contact_id, topic_id, kind, weight, to_timestamp($1) FROM staged
        """,
        now,
        timeout=LOAD_TIMEOUT,
    )
    await conn.execute("DROP TABLE staged")
    await conn.execute(
        "UPDATE matcher.counters SET value = $1 WHERE name = 'contacts'", len(population)
    )
    await conn.execute("SELECT setval('matcher.contacts_id_seq', $1)", len(population))
    await conn.execute("SELECT setval('matcher.topics_id_seq', $1)", len(topic_ids))
    await conn.execute(
        "ANALYZE matcher.contacts, matcher.interests, matcher.identities", timeout=LOAD_TIMEOUT
    )


def good_pair(a: Person, b: Person) -> bool:
    return a.community == b.community or bool(
        set(a.seeks) & set(b.offers) or set(a.offers) & set(b.seeks)
    )


def quality(groups: list[tuple[int, ...]], population: list[Person]) -> dict[str, float]:
    pairs = [pair for g in groups for pair in combinations(g, 2)]
    good = sum(good_pair(population[a - 1], population[b - 1]) for a, b in pairs)
    same_org = sum(
        population[a - 1].organization == population[b - 1].organization for a, b in pairs
    )
    return {
        "pairs": len(pairs),
        "precision": good / len(pairs) if pairs else 0.0,
        "same_org_pairs": same_org,
    }


def random_pairing(people: int, rng: random.Random) -> list[tuple[int, ...]]:
    ids = list(range(1, people + 1))
    rng.shuffle(ids)
    return [tuple(ids[i : i + 2]) for i in range(0, people - 1, 2)]


async def _round_groups(conn: asyncpg.Connection, round_id: Any) -> list[tuple[int, ...]]:
    rows = await conn.fetch(
        """
        SELECT array_agg(pp.contact_id ORDER BY pp.contact_id) AS members
        FROM matcher.proposals p JOIN matcher.proposal_participants pp ON pp.proposal_id = p.id
        WHERE p.round_id = $1 GROUP BY p.id
        """,
        round_id,
    )
    return [tuple(r["members"]) for r in rows]


async def run_rounds(dsn: str, people: int, rounds: int, seed: int) -> dict[str, Any]:
    population = planted_population(people, seed)
    pool = await create_pool_for(dsn)
    try:
        async with pool.acquire() as conn:
            await load(conn, population)
        service = Rounds(MatcherStore(pool), RoundPolicy())
        seen: set[tuple[int, int]] = set()
        repeats = 0
        per_round = []
        for number in range(rounds):
            started = time.perf_counter()
            requested = await service.request("everyone", seed=seed + number)
            while await service.run_next():
                pass
            seconds = time.perf_counter() - started
            done = _finished(await service.get(requested.id))
            async with pool.acquire() as conn:
                groups = await _round_groups(conn, requested.id)
                # The next round is a week later: this week's introductions leave the cap.
                await conn.execute(
                    "UPDATE matcher.proposal_participants "
                    "SET created_at = created_at - interval '7 days'"
                )
            for group in groups:
                for pair in combinations(group, 2):
                    repeats += pair in seen
                    seen.add(pair)
            assert done.stats is not None
            per_round.append(
                {
                    "round": number + 1,
                    "seconds": round(seconds, 2),
                    "coverage": done.stats["coverage"],
                    "groups": done.stats["groups"],
                    "unplaced": done.stats["unplaced"],
                    **quality(groups, population),
                }
            )
        baseline = quality(random_pairing(people, random.Random(seed)), population)
        return {"people": people, "rounds": per_round, "repeats": repeats, "random": baseline}
    finally:
        await pool.close()


def _finished(done: RoundRow | None) -> RoundRow:
    if done is None or done.status != "done":
        raise RuntimeError(f"the round did not finish: {done and done.error}")
    return done


async def create_pool_for(dsn: str) -> asyncpg.Pool:
    return await create_pool(Settings(database_url=dsn), max_size=4)


async def speed(dsn: str, people: int, seed: int) -> dict[str, Any]:
    population = planted_population(people, seed)
    pool = await create_pool_for(dsn)
    try:
        started = time.perf_counter()
        async with pool.acquire() as conn:
            await load(conn, population)
        loaded = time.perf_counter() - started
        service = Rounds(MatcherStore(pool), RoundPolicy())
        started = time.perf_counter()
        requested = await service.request("everyone", seed=seed)
        while await service.run_next():
            pass
        seconds = time.perf_counter() - started
        done = _finished(await service.get(requested.id))
        assert done.stats is not None
        return {
            "people": people,
            "load_seconds": round(loaded, 1),
            "round_seconds": round(seconds, 1),
            "phases": done.stats["seconds"],
            "plan_phases": done.stats["plan_seconds"],
            "coverage": done.stats["coverage"],
            "groups": done.stats["groups"],
        }
    finally:
        await pool.close()


def _fresh_database(label: str) -> Any:
    return isolated_infra(label)


def measure(people: int, rounds: int, speed_people: int, seed: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with _fresh_database("roundq") as infra:
        settings = infra.settings()
        asyncio.run(migrate(settings))
        results["quality"] = asyncio.run(run_rounds(settings.database_url, people, rounds, seed))
    if speed_people:
        with _fresh_database("rounds") as infra:
            settings = infra.settings()
            asyncio.run(migrate(settings))
            results["speed"] = asyncio.run(speed(settings.database_url, speed_people, seed))
    return results


def report(results: dict[str, Any]) -> list[str]:
    q = results["quality"]
    lines = [f"planted communities, {q['people']:,} people, {len(q['rounds'])} weekly rounds:"]
    for r in q["rounds"]:
        lines.append(
            f"  round {r['round']}: precision {r['precision']:.3f}, coverage {r['coverage']:.3f}, "
            f"{r['groups']} groups, {r['unplaced']} unplaced, same-org pairs "
            f"{r['same_org_pairs']}, {r['seconds']:.2f} s"
        )
    lines.append(f"  repeated pairs over all rounds: {q['repeats']}")
    b = q["random"]
    lines.append(
        f"  random pairing baseline: precision {b['precision']:.3f}, same-org pairs "
        f"{b['same_org_pairs']}"
    )
    if "speed" in results:
        s = results["speed"]
        lines.append(
            f"round over {s['people']:,} people: {s['round_seconds']} s "
            f"(load {s['phases']['load']} s, plan {s['phases']['plan']} s, write "
            f"{s['phases']['write']} s), coverage {s['coverage']:.3f}, {s['groups']:,} groups; "
            f"plan: {s['plan_phases']}"
        )
    return lines


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--speed-people", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = measure(args.people, args.rounds, args.speed_people, args.seed)
    if args.json:
        print(json.dumps(results, indent=2))
    for line in report(results):
        print(line)


if __name__ == "__main__":
    main()
