"""`make bench`: every benchmark in bench/, each on a fresh vhost and database; prints a table.

Pass --write docs/performance.md to record the run there as well.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import (
    assignment_quality,
    broker_ceiling,
    import_bench,
    ingest_throughput,
    latency,
    live_latency,
    matcher_throughput,
    notifier_throughput,
    postgres_ceiling,
    round_quality,
)
from bench.harness import bench_stack, wait_until_quiet
from tests.support.infra import free_port

NOTES = """## What was measured

- **RabbitMQ ceiling**: `bench/broker_ceiling.py`, aio-pika alone, 20,000 persistent messages of
  ~330 bytes into a quorum queue with publisher confirms, then consumed with manual acks.
- **ingest**: `bench/ingest_throughput.py`, wrk (a C load generator: Python clients saturate
  first) posting `/v1/interests` for 10 s each; every answer must be 202, which ingest sends only
  after RabbitMQ confirmed the request's message. A batch of 500 is one AMQP message, which is
  why batched ingest runs at several times the broker's message ceiling.
- **matcher**: `bench/matcher_throughput.py` fills the matcher's queue with 20,000 contacts and
  100,000 interests (topic popularity Zipf-distributed over 5,000 topics) in messages of 500,
  then starts the matcher and times until every event is in its inbox; then 5,000 single-event
  messages. Every event is fully applied: inbox row, contact or interest, live matching through
  the topic index, proposal and outbox row, one transaction per message, ack after commit. In
  this workload many interests find a partner until people reach the weekly cap (2), so the
  figure includes making thousands of proposals and relaying them to the notifier's queue.
- Single-event messages cost one transaction of about 20 statements each; batches share them.
- **PostgreSQL ceiling**: `bench/postgres_ceiling.py`, asyncpg alone: 200,000 rows by COPY,
  20,000 by executemany, into a plain table.
- **end to end**: `bench/latency.py` posts pairs of people to ingest at a constant 200 events/s
  (two contacts and two interests a pair) with the three services running (direct mode), and
  measures from ingest's 202 for the pair's second interest to each introduction's arrival at a
  local SMTP server; RabbitMQ's queues are sampled every 10 s.
- **notifier**: `bench/notifier_throughput.py` publishes 1,500 `intro.proposed.v1` (direct mode,
  two participants each, 100 per message as the matcher's outbox relay groups them) and times
  until a local SMTP server has all 3,000 emails; then the same with generic webhooks into a
  local HTTP server. Both receivers run in their own process (`bench/sinks.py`) and only count.
  Each message is a real SMTP conversation or signed HTTP POST, recorded in flight before it is
  sent (one committed statement for its group of 16), then its delivery row, attempt record
  and delivery event (one transaction for the group).
- **rounds**: `bench/round_quality.py` generates people in hidden communities of 40 (two of eight
  topics common to everyone, three of their community's five, a 20 % chance of one from another
  community, 5 % seekers and 5 % offerers of one of 20 skills across communities, 120
  organisations per 2,000 people), loads them with COPY and runs rounds through the matcher's
  real round code (snapshot, candidate graph, assignment, proposals and outbox rows committed).
  A pair is *good* inside one community or as a seek/offer match; precision is the share of good
  pairs (every pair inside a group counts), coverage the share of eligible people placed.
  Five rounds run a simulated week apart (so the weekly cap of 2 does not stop them); random
  pairing of the same people is the baseline. The speed figure is one round over 100,000 such
  people.
- **assignment quality**: `bench/assignment_quality.py` builds top-k shared-interest candidate
  graphs (degree ~10, hidden communities, a few isolated people) and compares the round's
  assignment with networkx's exact `max_weight_matching(maxcardinality=True)` on the same graph:
  total weight and people placed in pairs, at 1,000 and 5,000 people (networkx alone takes 10-16
  minutes at 5,000; `python -m bench.assignment_quality --sizes 1000 5000` runs the same alone);
  and times the assignment alone at 100,000.
- **import**: `bench/import_bench.py` writes a CSV of 1,000,000 people with 5 interests each
  (Zipf-like topics), runs `roac import` on it against ingest and the matcher (batches of 1,000,
  8 in flight), and waits until the matcher has applied every person and interest; it samples
  the RSS of both services throughout. `python -m bench.import_bench --people N --interests M`
  runs it alone.
- **live matching at scale**: `bench/live_latency.py` loads 1,000,000 people of the same
  population (5.3 million interests) with COPY, then applies 2,000 single new interests one at a
  time through the matcher's use case on the real PostgreSQL (inbox, interest, topic lock,
  candidate window, scoring, constraints under row locks, proposal and outbox row, commit); each
  is timed from call to commit. No broker in the loop: the figure is the matcher's own work.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", type=Path, help="also write the results as markdown here")
    parser.add_argument(
        "--latency-minutes", type=float, default=10.0, help="length of the steady-load run"
    )
    parser.add_argument(
        "--import-people",
        type=int,
        default=1_000_000,
        help="people in the roac import figure (5 interests each); 0 skips it",
    )
    args = parser.parse_args()

    rows: list[tuple[str, str]] = []

    def record(name: str, value: str) -> None:
        rows.append((name, value))
        print(f"{name}: {value}", flush=True)

    def settle(before: str) -> None:
        # Each figure on a machine the previous one has finished with (wait_until_quiet).
        waited, busy = wait_until_quiet()
        print(f"({waited:.0f} s until the machine was quiet before {before}; {busy:.0%} busy)")

    settle("RabbitMQ ceiling")
    with bench_stack() as stack:
        ceiling = asyncio.run(broker_ceiling.measure(stack.infra))
    publish_ceiling = ceiling["publish_msgs_per_s"]
    record(
        "RabbitMQ ceiling: aio-pika persistent publish, confirms, quorum queue, 500 in flight",
        f"{publish_ceiling:,.0f} msg/s",
    )
    record(
        "RabbitMQ ceiling: aio-pika consume, manual ack, prefetch 200",
        f"{ceiling['consume_msgs_per_s']:,.0f} msg/s",
    )

    settle("PostgreSQL ceiling")
    with bench_stack() as stack:
        pg = asyncio.run(postgres_ceiling.measure(stack.infra))
    record("PostgreSQL ceiling: asyncpg COPY", f"{pg['copy_rows_per_s']:,.0f} rows/s")
    record("PostgreSQL ceiling: asyncpg executemany", f"{pg['executemany_rows_per_s']:,.0f} rows/s")

    settle("ingest")
    with bench_stack("ingest") as stack:
        ingest = ingest_throughput.measure(stack)
    record(
        "ingest: single-event requests (wrk, 64 connections)",
        f"{ingest['single_requests_per_s']:,.0f} events/s",
    )
    record(
        "ingest: batches of 500 (wrk, 8 connections)",
        f"{ingest['batched_events_per_s']:,.0f} events/s "
        f"({ingest['batched_requests_per_s']:,.1f} requests/s)",
    )
    record(
        "ingest single-event requests / raw publish ceiling",
        f"{ingest['single_requests_per_s'] / publish_ceiling:.2f}",
    )
    record(
        "ingest batched events / raw publish ceiling (messages)",
        f"{ingest['batched_events_per_s'] / publish_ceiling:.1f}",
    )

    settle("matcher")
    with bench_stack() as stack:
        matcher = asyncio.run(matcher_throughput.measure(stack))
    record(
        "matcher: batches of 500, 20k contacts + 100k interests, live matching",
        f"{matcher['batched_events_per_s']:,.0f} events/s",
    )
    record(
        "matcher: one event per message", f"{matcher['single_event_messages_per_s']:,.0f} events/s"
    )
    record("matcher: proposals made during the run", f"{matcher['proposals']:,.0f}")

    settle("notifier")
    smtp_port, http_port = free_port(), free_port()
    sinks = notifier_throughput.start_sinks(smtp_port, http_port)
    try:
        with bench_stack(
            smtp_port=smtp_port,
            ROAC_INTRO_MODE="direct",
            ROAC_QUIET_HOURS_ENABLED="false",
            ROAC_WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
        ) as stack:
            notifier = notifier_throughput.measure(stack, http_port)
    finally:
        sinks.kill()
    record(
        "notifier: emails into a local SMTP server (1,500 introductions, 3,000 emails)",
        f"{notifier['emails_per_s']:,.0f} emails/s",
    )
    record(
        "notifier: webhook posts into a local HTTP server (3,000, one URL each, no pacing)",
        f"{notifier['webhooks_per_s']:,.0f} deliveries/s",
    )

    settle("end to end")
    steady = latency.measure_alone(args.latency_minutes)
    minutes = f"{args.latency_minutes:g} min"
    record(
        f"end to end at a steady 200 events/s for {minutes}: ingest to email, p50 / p99 / max",
        f"{steady['latency_p50_s']:.2f} s / {steady['latency_p99_s']:.2f} s / "
        f"{steady['latency_max_s']:.2f} s",
    )
    record(
        f"end to end at a steady 200 events/s for {minutes}: pairs introduced, missing",
        f"{steady['pairs_accepted']:,.0f}, {steady['introductions_missing']:.0f} missing",
    )
    record(
        "end to end: queue backlog (ready messages), peak in the second half / at the end",
        f"{steady['backlog_peak_second_half']:.0f} / {steady['backlog_at_end']:.0f}",
    )
    settle("rounds")
    rounds = round_quality.measure(people=2000, rounds=5, speed_people=100_000, seed=7)
    quality = rounds["quality"]
    first = quality["rounds"][0]
    record(
        "rounds, planted communities (2,000 people): precision / coverage, first round",
        f"{first['precision']:.3f} / {first['coverage']:.3f} "
        f"(random pairing: precision {quality['random']['precision']:.3f})",
    )
    record(
        "rounds, planted communities: worst precision / coverage over 5 weekly rounds",
        f"{min(r['precision'] for r in quality['rounds']):.3f} / "
        f"{min(r['coverage'] for r in quality['rounds']):.3f}",
    )
    record(
        "rounds, planted communities: repeated pairs over 5 rounds, same-organisation pairs",
        f"{quality['repeats']}, {sum(r['same_org_pairs'] for r in quality['rounds'])} "
        f"(random pairing: {quality['random']['same_org_pairs']} same-organisation pairs)",
    )
    record(
        "rounds, planted communities: proposals per round",
        ", ".join(f"{r['groups']:,}" for r in quality["rounds"]),
    )
    speed = rounds["speed"]
    record(
        f"round over {speed['people']:,} people (load, graph + assignment, write)",
        f"{speed['round_seconds']} s ({speed['phases']['load']} s, {speed['phases']['plan']} s, "
        f"{speed['phases']['write']} s), coverage {speed['coverage']:.3f}, "
        f"{speed['groups']:,} groups",
    )

    settle("assignment")
    # The issue's two sizes, each against networkx's exact optimum (10-16 minutes of blossom at
    # 5,000 people here: the longest part of make bench after the steady-load run).
    for row in assignment_quality.run([1_000, 5_000], skip_exact_above=5_000):
        people = f"{int(row['people']):,} people, isolated fraction {row['isolated']:g}"
        if "exact_weight" in row:
            record(
                f"assignment vs exact optimum (networkx blossom), {people}: weight ratio, "
                "everyone placeable placed, time (assign / exact)",
                f"{row['ratio']:.4f} (greedy {row['greedy_ratio']:.4f}), "
                f"{'yes' if row['placed_all'] else 'NO'} "
                f"({int(row['assign_placed']):,} vs {int(row['exact_placed']):,} in pairs), "
                f"{row['assign_s']:.2f} s / {row['exact_s']:.1f} s",
            )
        else:
            record(
                f"assignment alone, {people}",
                f"{row['assign_s']:.2f} s, {int(row['assign_placed']):,} in pairs",
            )

    settle("live matching")
    live = live_latency.run(people=1_000_000, events=2000)
    record(
        f"live matching with {live['people']:,} people / {live['interests']:,} interests "
        "loaded: one interest event, p50 / p99 / max",
        f"{live['p50_ms']} ms / {live['p99_ms']} ms / {live['max_ms']} ms",
    )

    if args.import_people:
        settle("import")
        imported = import_bench.measure(args.import_people, 5 * args.import_people)
        size = f"{args.import_people:,} people / {5 * args.import_people:,} interests"
        record(
            f"roac import of {size}: command done / matcher applied everything",
            f"{imported['import_s']:,.0f} s / {imported['applied_s']:,.0f} s "
            f"({(imported['people'] + imported['interests']) / imported['applied_s']:,.0f} "
            "items/s end to end)",
        )
        record(
            "roac import: peak RSS of ingest / matcher (RSS at start -> end)",
            f"{imported['ingest_peak_mib']:,.0f} MiB / {imported['matcher_peak_mib']:,.0f} MiB "
            f"({imported['ingest_first_mib']:,.0f} -> {imported['ingest_last_mib']:,.0f}, "
            f"{imported['matcher_first_mib']:,.0f} -> {imported['matcher_last_mib']:,.0f})",
        )

    table = "| measurement | result |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)
    print("\n" + table)
    if args.write:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        machine = (
            f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
        )
        args.write.write_text(
            "# Performance\n\n"
            f"Measured by `make bench` (`python bench/run_all.py --write {args.write}`) on "
            f"{stamp}, {machine}; RabbitMQ, PostgreSQL, the services and the load generator "
            f"share the machine.\n\n{table}\n\n{NOTES}"
        )


if __name__ == "__main__":
    main()
