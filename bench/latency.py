"""End-to-end latency under a steady load: people and interests posted to ingest at a constant
200 events/s (pairs of people who share a topic: 2 contacts and 2 interests a pair, 50 pairs a
second), for ten minutes; latency is from ingest accepting the pair's second interest (202) to
each person's introduction arriving at the SMTP server. The queues are sampled throughout to
show whether a backlog builds up."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from dataclasses import dataclass, field

import aiohttp
import httpx

from bench.harness import BenchStack

EVENTS_PER_PAIR = 4
QUEUES = ("roac.matcher", "roac.notifier", "roac.notifier.deliveries")


@dataclass
class Run:
    accepted_at: dict[str, float] = field(
        default_factory=dict
    )  # recipient -> second interest's 202
    refused: int = 0
    behind_seconds: float = 0.0  # how far the load generator fell behind its schedule, at most
    backlog: list[tuple[float, dict[str, int]]] = field(default_factory=list)


async def _pair(session: aiohttp.ClientSession, url: str, key: str, run: Run) -> None:
    tag = uuid.uuid4().hex[:12]
    people = [
        {
            "source": "bench",
            "external_id": f"{tag}-{s}",
            "name": f"{s} {tag}",
            "email": f"{s}.{tag}@example.org",
        }
        for s in ("a", "b")
    ]
    headers = {"Authorization": f"Bearer {key}"}
    bodies = [("/v1/contacts", {"items": people})] + [
        (
            "/v1/interests",
            {"source": "bench", "external_id": p["external_id"], "topic": f"steady {tag}"},
        )
        for p in people
    ]
    for path, body in bodies:
        async with session.post(url + path, json=body, headers=headers) as response:
            if response.status != 202:
                run.refused += 1
                return
    accepted = time.time()
    for person in people:
        run.accepted_at[person["email"]] = accepted


def _depths(vhost: str) -> dict[str, int]:
    out = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "name", "messages_ready"],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    found = {}
    for line in out.splitlines()[1:]:
        parts = line.split()
        if len(parts) == 2 and parts[0] in QUEUES:
            found[parts[0]] = int(parts[1])
    return found


async def _load(stack: BenchStack, events_per_second: float, seconds: float, run: Run) -> None:
    pairs_per_second = events_per_second / EVENTS_PER_PAIR
    interval = 1 / pairs_per_second
    url = stack.urls["ingest"]
    tasks: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as session:
        started = time.monotonic()
        next_at = started
        next_sample = started
        while (now := time.monotonic()) - started < seconds:
            if now >= next_sample:
                sample = await asyncio.to_thread(_depths, stack.infra.vhost)
                run.backlog.append((now - started, sample))
                # As it goes: a slowdown inside a long run shows when it happened.
                print(f"  {now - started:5.0f} s: ready messages {sample}", flush=True)
                next_sample += 10
            if now < next_at:
                await asyncio.sleep(next_at - now)
            run.behind_seconds = max(run.behind_seconds, time.monotonic() - next_at)
            task = asyncio.create_task(_pair(session, url, stack.api_key, run))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            next_at += interval
        await asyncio.gather(*tasks)
    run.backlog.append(
        (time.monotonic() - started, await asyncio.to_thread(_depths, stack.infra.vhost))
    )


def _quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _print_by_minute(run: Run, arrived: dict[str, float]) -> None:
    """p50 / p99 of the pairs accepted in each minute of the run."""
    if not run.accepted_at:
        return
    first = min(run.accepted_at.values())
    minutes: dict[int, list[float]] = {}
    for recipient, accepted in run.accepted_at.items():
        if recipient in arrived:
            minutes.setdefault(int((accepted - first) // 60), []).append(
                arrived[recipient] - accepted
            )
    for minute, values in sorted(minutes.items()):
        print(
            f"  minute {minute + 1}: p50 {_quantile(values, 0.5):.2f} s, "
            f"p99 {_quantile(values, 0.99):.2f} s ({len(values):,} introductions)",
            flush=True,
        )


def measure(
    stack: BenchStack, http_port: int, *, events_per_second: float = 200, minutes: float = 10
) -> dict[str, float]:
    run = Run()
    asyncio.run(_load(stack, events_per_second, minutes * 60, run))
    times_url = f"http://127.0.0.1:{http_port}/times"
    deadline = time.monotonic() + 120
    while True:
        arrived = httpx.get(times_url, timeout=30).json()
        missing = [r for r in run.accepted_at if r not in arrived]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(1)
    latencies = [arrived[r] - t for r, t in run.accepted_at.items() if r in arrived]
    _print_by_minute(run, arrived)
    half = [s for t, s in run.backlog if t >= minutes * 30]
    peak_second_half = max((sum(s.values()) for s in half), default=0)
    return {
        "pairs_accepted": len(run.accepted_at) / 2,
        "refused_requests": run.refused,
        "introductions_missing": len(missing),
        "latency_p50_s": _quantile(latencies, 0.50),
        "latency_p99_s": _quantile(latencies, 0.99),
        "latency_max_s": max(latencies),
        "backlog_peak_second_half": peak_second_half,
        "backlog_at_end": sum(run.backlog[-1][1].values()),
        "load_generator_behind_max_s": run.behind_seconds,
    }


def measure_alone(minutes: float = 10) -> dict[str, float]:
    """Start the three services (direct introductions, no quiet hours) and the counting SMTP
    and HTTP sinks, run the steady load, stop everything."""
    from bench import notifier_throughput
    from bench.harness import bench_stack
    from tests.support.infra import free_port

    smtp_port, http_port = free_port(), free_port()
    sinks = notifier_throughput.start_sinks(smtp_port, http_port)
    try:
        with bench_stack(
            "matcher",
            "notifier",
            "ingest",
            smtp_port=smtp_port,
            ROAC_INTRO_MODE="direct",
            ROAC_QUIET_HOURS_ENABLED="false",
            ROAC_MATCH_MIN_SCORE="0.5",
        ) as stack:
            return measure(stack, http_port, minutes=minutes)
    finally:
        sinks.kill()


if __name__ == "__main__":
    # python -m bench.latency [MINUTES]: this figure alone (make bench runs it with the rest).
    import json
    import sys

    print(json.dumps(measure_alone(float(sys.argv[1]) if len(sys.argv) > 1 else 10.0), indent=2))
