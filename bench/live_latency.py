"""Event-triggered matching at scale: with a million people and five million interests loaded,
how long one new interest takes to be applied and matched (inbox row, interest, topic lock,
candidate window, scoring, constraints under row locks, proposal and outbox row, commit).

The population is the planted-community one of `round_quality` (common, community and cross-talk
topics, seekers and offerers, organisations), loaded with COPY as a finished import would leave
it. Then new single-interest events are applied one at a time through `MatcherService.apply`,
the matcher's use case, on the real PostgreSQL; each is timed from call to commit.

    python -m bench.live_latency [--people 1000000] [--events 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from typing import Any

from bench.round_quality import COMMON_TOPICS, TOPICS_PER_COMMUNITY, load, planted_population
from services.database import migrate
from services.matcher.constraints import Rules
from services.matcher.service import MatcherService, MatchingPolicy
from services.matcher.store import MatcherStore
from shared.db import create_pool
from shared.events import EventBatch, InterestData, InterestDeclared
from shared.settings import Settings
from tests.support.infra import isolated_infra


def _event(rng: random.Random, people: int, communities: int) -> InterestDeclared:
    person = rng.randrange(1, people + 1)
    roll = rng.random()
    if roll < 0.5:
        topic = (
            f"community {rng.randrange(communities)} topic {rng.randrange(TOPICS_PER_COMMUNITY)}"
        )
    elif roll < 0.8:
        topic = f"common {rng.randrange(COMMON_TOPICS)}"
    else:
        topic = f"new topic {rng.randrange(people)}"  # often nobody else has it yet
    return InterestDeclared(
        source="ingest",
        correlation_id="bench",
        data=InterestData(source="bench", external_id=str(person), topic=topic),
    )


async def measure(dsn: str, people: int, events: int, seed: int) -> dict[str, Any]:
    settings = Settings(database_url=dsn)
    pool = await create_pool(settings, max_size=4)
    try:
        started = time.perf_counter()
        population = planted_population(people, seed)
        interests = sum(len(p.likes) + len(p.seeks) + len(p.offers) for p in population)
        async with pool.acquire() as conn:
            await load(conn, population)
        loaded = time.perf_counter() - started
        del population
        service = MatcherService(
            MatcherStore(pool),
            MatchingPolicy(
                min_score=settings.match_min_score,
                candidates_per_topic=settings.match_candidates_per_topic,
                rules=Rules(cap_per_week=settings.match_cap_per_week),
            ),
        )
        rng = random.Random(seed)
        communities = max(people // 40, 2)
        for _ in range(50):  # warm the connection pool's statement caches
            await service.apply(EventBatch(events=[_event(rng, people, communities)]))
        timings = []
        for _ in range(events):
            batch = EventBatch(events=[_event(rng, people, communities)])
            t0 = time.perf_counter()
            await service.apply(batch)
            timings.append(time.perf_counter() - t0)
        async with pool.acquire() as conn:
            proposals = await conn.fetchval("SELECT count(*) FROM matcher.proposals")
        timings.sort()
        return {
            "people": people,
            "interests": interests,
            "load_seconds": round(loaded, 1),
            "events": events,
            "proposals": proposals,
            "p50_ms": round(timings[len(timings) // 2] * 1000, 2),
            "p99_ms": round(timings[int(len(timings) * 0.99)] * 1000, 2),
            "max_ms": round(timings[-1] * 1000, 2),
            "mean_ms": round(statistics.fmean(timings) * 1000, 2),
        }
    finally:
        await pool.close()


def run(people: int, events: int, seed: int = 7) -> dict[str, Any]:
    with isolated_infra("live") as infra:
        settings = infra.settings()
        asyncio.run(migrate(settings))
        return asyncio.run(measure(settings.database_url, people, events, seed))


def report(result: dict[str, Any]) -> str:
    return (
        f"live path with {result['people']:,} people / {result['interests']:,} interests "
        f"loaded ({result['load_seconds']} s): {result['events']:,} single-interest events, "
        f"p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, max {result['max_ms']} ms "
        f"({result['proposals']:,} proposals)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    print(report(run(args.people, args.events, args.seed)))


if __name__ == "__main__":
    main()
