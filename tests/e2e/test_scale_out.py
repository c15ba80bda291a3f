"""Three matcher processes on one queue and one database, hit by a burst: no group proposed
twice and nobody over the weekly cap, because the database (row locks, the groups table)
guarantees it, not the timing."""

from __future__ import annotations

import asyncio
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aio_pika
import asyncpg
import httpx
import pytest

from shared.topology import MATCHER_QUEUE
from tests.e2e.conftest import new_person, run_id, running_stack
from tests.support.infra import free_port
from tests.support.processes import ServiceProcess

pytestmark = pytest.mark.e2e

PEOPLE = 40
TOPICS = 6
CAP = 2


async def _queue_depth(amqp_url: str) -> int:
    connection = await aio_pika.connect(amqp_url)
    async with connection, connection.channel() as channel:
        queue = await channel.declare_queue(MATCHER_QUEUE.name, passive=True)
        return int(queue.declaration_result.message_count or 0)


def _consumed(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("roac_events_consumed_total{")
        and 'service="matcher"' in line
        and 'outcome="processed"' in line
    )


def test_three_matchers_on_a_burst_never_duplicate_or_exceed_the_cap(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # Small pools: this stack runs beside the session's, within PostgreSQL's 100 connections.
    with running_stack(
        "scale",
        tmp_path,
        request,
        ROAC_INTRO_MODE="direct",
        ROAC_DATABASE_POOL_SIZE=5,
        ROAC_CONSUMER_PREFETCH=8,
    ) as stack:
        extra = []
        for n in (2, 3):
            port = free_port()
            env = {**stack.env, "ROAC_MATCHER_PORT": str(port)}
            process = ServiceProcess(
                "matcher", env, f"http://127.0.0.1:{port}/readyz", tmp_path, label=f"matcher{n}"
            )
            process.start()
            extra.append((process, f"http://127.0.0.1:{port}"))
        try:
            run = run_id()
            people = [new_person(run, i) for i in range(PEOPLE)]
            with stack.client() as client:
                assert client.post("/v1/contacts", json={"items": people}).status_code == 202
            time.sleep(1.0)  # contacts first, so every interest below can match at once
            interests = [
                {"source": "e2e", "external_id": f"{run}-{i}", "topic": f"burst {t} {run}"}
                for i in range(PEOPLE)
                for t in range(TOPICS)
            ]
            random.Random(1).shuffle(interests)

            def post(body: dict[str, str]) -> int:
                with stack.client() as client:
                    return client.post("/v1/interests", json=body).status_code

            with ThreadPoolExecutor(16) as threads:
                assert set(threads.map(post, interests)) == {202}

            settle_until = time.monotonic() + 60
            last, stable_since = -1, time.monotonic()

            async def proposals() -> int:
                conn = await asyncpg.connect(stack.infra.database_url)
                try:
                    return int(await conn.fetchval("SELECT count(*) FROM matcher.proposals"))
                finally:
                    await conn.close()

            while time.monotonic() < settle_until:
                count = asyncio.run(proposals())
                depth = asyncio.run(_queue_depth(stack.infra.amqp_url))
                if count != last or depth:
                    last, stable_since = count, time.monotonic()
                elif time.monotonic() - stable_since > 3:
                    break
                time.sleep(0.3)

            async def check() -> tuple[list[asyncpg.Record], list[asyncpg.Record], int]:
                conn = await asyncpg.connect(stack.infra.database_url)
                try:
                    repeated = await conn.fetch(
                        "SELECT group_key, count(*) FROM matcher.proposals "
                        "GROUP BY group_key HAVING count(*) > 1"
                    )
                    over_cap = await conn.fetch(
                        "SELECT contact_id, count(*) FROM matcher.proposal_participants "
                        "GROUP BY contact_id HAVING count(*) > $1",
                        CAP,
                    )
                    total = await conn.fetchval("SELECT count(*) FROM matcher.proposals")
                    return repeated, over_cap, int(total)
                finally:
                    await conn.close()

            repeated, over_cap, total = asyncio.run(check())
            assert repeated == []
            assert over_cap == []
            assert total >= PEOPLE // 2  # the burst did make introductions
            # All three processes took part.
            urls = [stack.matcher_url] + [url for _, url in extra]
            assert all(_consumed(url) > 0 for url in urls)

            # Each proposal reached each of its people once (a pair two, a group of people who
            # share a rare topic three or more): the emails add up. A message requeued after a
            # deadlock between the matchers (transient: retried after a pause) can still add a
            # proposal after the queue looked empty, so the counts are read again.
            async def seats() -> int:
                conn = await asyncpg.connect(stack.infra.database_url)
                try:
                    return int(
                        await conn.fetchval("SELECT count(*) FROM matcher.proposal_participants")
                    )
                finally:
                    await conn.close()

            expected = asyncio.run(seats())
            deadline = time.monotonic() + 20
            while (
                sum(len(stack.sink.to(p["email"])) for p in people) < expected
                and time.monotonic() < deadline
            ):
                time.sleep(0.3)
                expected = asyncio.run(seats())
            time.sleep(1.0)
            repeated, over_cap, total = asyncio.run(check())
            assert repeated == [] and over_cap == []
            caught = [m for p in people for m in stack.sink.to(p["email"])]
            assert len({m.message_id for m in caught}) == len(caught), "an email was sent twice"
            assert len(caught) == asyncio.run(seats())
        finally:
            for process, _ in extra:
                process.stop()
