"""How fast every console page answers with a large community loaded (issue 21: 100,000
people, 500,000 interests and 50,000 introductions, every page under 300 ms at p95).

The data is COPYed straight into the matcher's and notifier's tables (as a finished import and
weeks of rounds would leave them: bench/round_quality.py loads the same way; five pools' weekly
rounds, most introductions made by one of them, the introduced ones' check-ins), then the services
and the console run as processes, an operator signs in, and each page is fetched `--repeat`
times in turn; p50, p95 and max per page are printed (and written as a Markdown table with
`--write FILE`).

    .venv/bin/python -m bench.console_pages                     # 10,000 people, quick
    .venv/bin/python -m bench.console_pages --people 100000 --intros 50000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from tempfile import mkdtemp

import asyncpg
import httpx

from bench.harness import bench_stack
from tests.support.infra import free_port
from tests.support.processes import ServiceProcess

LOAD_TIMEOUT = 600
STATES = ("asked", "accepted", "introduced", "declined", "expired", "failed")
CHECKINS = ("met", "met", "didnt_happen", "not_for_me", "still_not_yet", "sent", "expired")
POOLS = 5
OPERATOR, PASSWORD = "bench@example.org", "a long bench passphrase"
ROAC = (sys.executable, "-m", "services.cli")


async def load(dsn: str, people: int, interests_each: int, intros: int, seed: int) -> None:
    rng = random.Random(seed)
    topics = [f"topic {i}" for i in range(max(people // 20, 10))]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.copy_records_to_table(
            "contacts",
            schema_name="matcher",
            columns=["id", "name", "organization", "deliverable", "tags"],
            records=[
                (c, f"Person {c}", f"Org {c % 500}", True, ["bench", f"group-{c % 50}"])
                for c in range(1, people + 1)
            ],
            timeout=LOAD_TIMEOUT,
        )
        await conn.execute(
            "UPDATE matcher.contacts SET channels = jsonb_build_array(jsonb_build_object("
            "'type', 'email', 'address', 'p' || id || '@example.org'))",
            timeout=LOAD_TIMEOUT,
        )
        await conn.copy_records_to_table(
            "identities",
            schema_name="matcher",
            columns=["source", "external_id", "contact_id"],
            records=[("bench", str(c), c) for c in range(1, people + 1)],
            timeout=LOAD_TIMEOUT,
        )
        held: dict[int, int] = {}
        rows = []
        for c in range(1, people + 1):
            for t in rng.sample(range(len(topics)), interests_each):
                rows.append((c, t + 1, "likes", 1.0))
                held[t + 1] = held.get(t + 1, 0) + 1
        await conn.copy_records_to_table(
            "topics",
            schema_name="matcher",
            columns=["id", "name", "people"],
            records=[(i + 1, name, held.get(i + 1, 0)) for i, name in enumerate(topics)],
        )
        await conn.execute(
            "CREATE TEMP TABLE staged (contact_id bigint, topic_id bigint, kind text, weight real)"
        )
        await conn.copy_records_to_table("staged", records=rows, timeout=LOAD_TIMEOUT)
        await conn.execute(
            "INSERT INTO matcher.interests (contact_id, topic_id, kind, weight, declared_at) "
            "SELECT contact_id, topic_id, kind, weight, now() FROM staged",
            timeout=LOAD_TIMEOUT,
        )
        await conn.execute("UPDATE matcher.counters SET value = $1 WHERE name = 'contacts'", people)
        await conn.execute("SELECT setval('matcher.contacts_id_seq', $1)", people)
        await conn.execute("SELECT setval('matcher.topics_id_seq', $1)", len(topics))
        # Weekly rounds of five pools over the last 12 weeks (Today charts each pool's).
        now = datetime.now(UTC)
        pools = ["everyone", *(f"pool-{i}" for i in range(1, POOLS))]
        await conn.executemany(
            "INSERT INTO matcher.pools (name) VALUES ($1) ON CONFLICT DO NOTHING",
            [(p,) for p in pools],
        )
        rounds = [
            (uuid.uuid4(), pool, now - timedelta(weeks=week, hours=index))
            for week in range(13)
            for index, pool in enumerate(pools)
        ]
        await conn.copy_records_to_table(
            "rounds",
            schema_name="matcher",
            columns=["id", "pool", "group_size", "seed", "serendipity", "status", "requested_at"],
            records=[(r[0], r[1], 2, 1, 0.0, "done", r[2]) for r in rounds],
        )
        # Introductions over the last 12 weeks, two seats each, in every state; four in five
        # made by a round (of their week), the rest live; the introduced ones' check-ins
        # answered or not.
        intro_rows, seat_rows, checkin_rows = [], [], []
        for _ in range(intros):
            intro_id = uuid.uuid4()
            a, b = rng.sample(range(1, people + 1), 2)
            created = now - timedelta(seconds=rng.uniform(0, 84 * 86400))
            state = rng.choice(STATES)
            week = int((now - created) / timedelta(weeks=1))
            body = {
                "reason": "You both care about a bench topic.",
                "topics": [{"topic": "topic 1"}],
                "participants": [
                    {"source": "bench", "external_id": str(a), "name": f"Person {a}"},
                    {"source": "bench", "external_id": str(b), "name": f"Person {b}"},
                ],
            }
            if rng.random() < 0.8:
                body["round_id"] = str(rounds[week * POOLS + rng.randrange(POOLS)][0])
            intro_rows.append(
                (intro_id, "double_opt_in", state, json.dumps(body), "bench", created, created)
            )
            answer = "accepted" if state in ("accepted", "introduced") else "asked"
            seat_rows += [
                (intro_id, 0, "bench", str(a), "peer", answer),
                (intro_id, 1, "bench", str(b), "peer", answer),
            ]
            if state == "introduced":
                checkin_rows += [
                    (intro_id, seat, rng.choice(CHECKINS), created + timedelta(days=1))
                    for seat in (0, 1)
                ]
        await conn.execute(
            "CREATE TEMP TABLE staged_intros (id uuid, mode text, state text, intro text, "
            "correlation_id text, proposed_at timestamptz, created_at timestamptz)"
        )
        await conn.copy_records_to_table("staged_intros", records=intro_rows)
        await conn.execute(
            "INSERT INTO notifier.intros "
            "(id, mode, state, intro, correlation_id, proposed_at, created_at) "
            "SELECT id, mode, state, intro::jsonb, correlation_id, proposed_at, created_at "
            "FROM staged_intros",
            timeout=LOAD_TIMEOUT,
        )
        await conn.copy_records_to_table(
            "intro_seats",
            schema_name="notifier",
            columns=["intro_id", "position", "source", "external_id", "role", "answer"],
            records=seat_rows,
            timeout=LOAD_TIMEOUT,
        )
        await conn.copy_records_to_table(
            "checkins",
            schema_name="notifier",
            columns=["intro_id", "position", "state", "introduced_at"],
            records=checkin_rows,
            timeout=LOAD_TIMEOUT,
        )
        await conn.execute("ANALYZE", timeout=LOAD_TIMEOUT)
    finally:
        await conn.close()


def sign_in(client: httpx.Client) -> None:
    page = client.get("/sign-in")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token, page.text
    answer = client.post(
        "/sign-in",
        data={"csrf_token": token[1], "email": OPERATOR, "password": PASSWORD, "next": "/"},
    )
    assert answer.status_code == 303, answer.text


def measure(base: str, round_id: str | None, repeat: int) -> dict[str, list[float]]:
    pages = {
        "Today": "/",
        "Today (one pool)": "/?pool=pool-1",
        "Pools": "/pools",
        "Pool form": "/pools/edit?name=everyone",
        "Rounds": "/rounds",
        "Rounds of a pool": "/rounds?pool=everyone",
        "People (everyone)": "/people",
        "People (name)": "/people?q=Person+4242",
        "People (topic)": "/people?q=topic+7",
        "People (email)": "/people?q=p4242@example.org",
        "A person": "/person?source=bench&id=4242",
        "Deliveries": "/deliveries",
        "Audit": "/audit",
    }
    if round_id:
        pages["A dry run"] = f"/rounds/{round_id}"
    timings: dict[str, list[float]] = {name: [] for name in pages}
    with httpx.Client(base_url=base, timeout=30) as client:
        sign_in(client)
        for name, path in pages.items():  # warm-up
            assert client.get(path).status_code == 200, (name, path)
        for _ in range(repeat):
            for name, path in pages.items():
                started = time.perf_counter()
                response = client.get(path)
                timings[name].append(time.perf_counter() - started)
                assert response.status_code == 200, (name, response.status_code)
    return timings


def report(timings: dict[str, list[float]], args: argparse.Namespace) -> list[str]:
    lines = [
        f"Console pages with {args.people:,} people, {args.people * args.interests:,} interests "
        f"and {args.intros:,} introductions ({args.repeat} requests per page, one at a time):",
        "",
        "| page | p50 ms | p95 ms | max ms |",
        "|---|---:|---:|---:|",
    ]
    for name, values in timings.items():
        ordered = sorted(values)
        p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)]
        lines.append(
            f"| {name} | {statistics.median(ordered) * 1000:.0f} | {p95 * 1000:.0f} "
            f"| {ordered[-1] * 1000:.0f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=10_000)
    parser.add_argument("--interests", type=int, default=5, help="per person")
    parser.add_argument("--intros", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=40)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--write", type=Path, help="also write the table to this file")
    args = parser.parse_args()

    with bench_stack("matcher", "notifier", "ingest") as stack:
        started = time.perf_counter()
        asyncio.run(
            load(stack.infra.database_url, args.people, args.interests, args.intros, args.seed)
        )
        print(f"loaded in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        port = free_port()
        env = {
            **stack.env,
            "ROAC_CONSOLE_PORT": str(port),
            "ROAC_CONSOLE_API_KEY": stack.api_key,
            "ROAC_CONSOLE_INGEST_URL": stack.urls["ingest"],
            "ROAC_CONSOLE_MATCHER_URL": stack.urls["matcher"],
            "ROAC_CONSOLE_NOTIFIER_URL": stack.urls["notifier"],
        }
        subprocess.run(
            [*ROAC, "operators", "create", OPERATOR, "--password", PASSWORD],
            env={**os.environ, **env},
            check=True,
            capture_output=True,
        )
        round_id = None
        with httpx.Client(
            base_url=stack.urls["matcher"],
            headers={"Authorization": f"Bearer {stack.api_key}"},
            timeout=30,
        ) as matcher:
            answer = matcher.post("/v1/rounds", json={"pool": "everyone", "dry_run": True})
            round_id = answer.json()["id"]
            deadline = time.monotonic() + 600
            while matcher.get(f"/v1/rounds/{round_id}").json()["status"] != "done":
                assert time.monotonic() < deadline, "the dry run did not finish"
                time.sleep(1)
        console = ServiceProcess(
            "console", env, f"http://127.0.0.1:{port}/readyz", Path(mkdtemp(prefix="console-"))
        )
        console.start()
        try:
            timings = measure(f"http://127.0.0.1:{port}", round_id, args.repeat)
        finally:
            console.stop()
    lines = report(timings, args)
    print("\n".join(lines))
    if args.write:
        args.write.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
