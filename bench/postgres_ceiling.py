"""The raw PostgreSQL ceiling on this machine: rows per second through asyncpg's COPY and
through executemany, no roac code involved."""

from __future__ import annotations

import asyncpg

from bench.harness import Stopwatch
from tests.support.infra import Infra

ROWS = 200_000
EXECUTEMANY_ROWS = 20_000


async def measure(infra: Infra) -> dict[str, float]:
    from shared.migrations import ensure_database

    await ensure_database(infra.database_url)
    conn = await asyncpg.connect(infra.database_url)
    try:
        await conn.execute("CREATE TABLE bench_ceiling (id bigint, topic text, weight real)")
        rows = [(i, f"topic {i % 5000}", 1.0) for i in range(ROWS)]
        with Stopwatch() as copying:
            await conn.copy_records_to_table("bench_ceiling", records=rows)
        with Stopwatch() as inserting:
            await conn.executemany(
                "INSERT INTO bench_ceiling (id, topic, weight) VALUES ($1, $2, $3)",
                rows[:EXECUTEMANY_ROWS],
            )
        await conn.execute("DROP TABLE bench_ceiling")
    finally:
        await conn.close()
    return {
        "copy_rows_per_s": ROWS / copying.seconds,
        "executemany_rows_per_s": EXECUTEMANY_ROWS / inserting.seconds,
    }
