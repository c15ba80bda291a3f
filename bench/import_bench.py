"""`roac import` at scale: generate a CSV of N people with M interests (streaming), import it into
ingest + matcher started by bench_stack, wait until the matcher applied everything, and report
times and the peak RSS (VmHWM) of the ingest and matcher processes.

    .venv/bin/python -m bench.import_bench --people 100000 --interests 500000
    .venv/bin/python -m bench.import_bench            # the target: 1,000,000 / 5,000,000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import threading
import time
from itertools import accumulate
from pathlib import Path
from tempfile import mkdtemp

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.harness import BenchStack, bench_stack

HEADER = "source,external_id,name,email,organization,timezone,tags,topic,kind,weight\n"
KINDS = ("likes", "likes", "likes", "seeks", "offers")


def generate(path: Path, people: int, interests: int, seed: int = 7) -> None:
    """Each person's row followed by their interests (Zipf-like topics), written as it goes."""
    rng = random.Random(seed)
    topics = [f"topic {i}" for i in range(max(100, people // 10))]
    # Cumulative weights once: rng.choices with plain weights sums all 100,000 per call.
    cumulative = list(accumulate(1 / (i + 1) for i in range(len(topics))))
    per_person, extra = divmod(interests, people)
    with path.open("w", buffering=1 << 20) as out:
        out.write(HEADER)
        for p in range(people):
            out.write(
                f"bench,{p},Person {p},p{p}@example.org,Org {p % 5000},Europe/Berlin,"
                f"city-{p % 50},,,\n"
            )
            count = per_person + (1 if p < extra else 0)
            chosen = set(rng.choices(topics, cum_weights=cumulative, k=count * 2))
            for topic in list(chosen)[:count]:
                out.write(f"bench,{p},,,,,,{topic},{rng.choice(KINDS)},1\n")


def _status(pid: int, field: str) -> int:
    """A /proc/<pid>/status memory field in KiB (0 once the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssSampler(threading.Thread):
    def __init__(self, pids: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.samples: dict[str, list[int]] = {name: [] for name in pids}
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(1.0):
            for name, pid in self.pids.items():
                self.samples[name].append(_status(pid, "VmRSS"))


async def _applied(database_url: str) -> tuple[int, int]:
    conn = await asyncpg.connect(database_url)
    try:
        people = await conn.fetchval("SELECT count(*) FROM matcher.contacts WHERE name IS NOT NULL")
        interests = await conn.fetchval("SELECT count(*) FROM matcher.interests")
        return int(people), int(interests)
    finally:
        await conn.close()


def _processed(matcher_url: str) -> dict[str, float]:
    """Events the matcher applied so far, by type (roac_events_consumed_total, processed)."""
    try:
        text = httpx.get(f"{matcher_url}/metrics", timeout=10).text
    except httpx.HTTPError:
        return {}
    return {
        sample.labels["type"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "roac_events_consumed_total"
        and sample.labels.get("service") == "matcher"
        and sample.labels.get("outcome") == "processed"
    }


def run(
    stack: BenchStack, path: Path, people: int, batch: int, concurrency: int
) -> dict[str, float]:
    """Import the file; print and return the times and peak RSS (MiB) of ingest and matcher."""
    pids = {name: stack.processes[name].pid or 0 for name in ("ingest", "matcher")}
    sampler = RssSampler(pids)
    sampler.start()
    started = time.perf_counter()
    result = subprocess.run(
        [
            *(sys.executable, "-m", "services.cli", "import", str(path)),
            *("--url", stack.urls["ingest"], "--api-key", stack.api_key),
            *("--batch", str(batch), "--concurrency", str(concurrency)),
        ],
        env={**os.environ, **stack.env},
        capture_output=True,
        text=True,
    )
    imported = time.perf_counter() - started
    print(result.stdout + result.stderr[-2000:])
    # What the summary says was sent, not what was asked for: a smaller --file than --people
    # would otherwise wait hours for people who never come.
    expected_people = _imported(result.stdout, "contacts") or people
    expected_interests = _imported(result.stdout, "interests")
    # Done is read from the matcher's own counter: counting millions of rows every few seconds
    # would load the database the matcher is still writing to. The tables are counted once, at
    # the end, as the proof.
    # An import that could not go on (exit 2 or more) leaves nothing more to wait for.
    while result.returncode in (0, 1) and time.perf_counter() - started < 3 * 3600:
        processed = _processed(stack.urls["matcher"])
        if (
            processed.get("contact.upserted.v1", 0) >= expected_people
            and processed.get("interest.declared.v1", 0) >= expected_interests
        ):
            break
        time.sleep(1)
    applied = time.perf_counter() - started
    counts = asyncio.run(_applied(stack.infra.database_url))
    sampler.stopped.set()
    sampler.join()
    print(f"import command: {imported:,.1f} s (exit {result.returncode})")
    print(f"matcher applied {counts[0]:,} people, {counts[1]:,} interests after {applied:,.1f} s")
    figures = {
        "import_s": imported,
        "applied_s": applied,
        "people": float(counts[0]),
        "interests": float(counts[1]),
        "exit_code": float(result.returncode),
    }
    for name, pid in pids.items():
        samples = sampler.samples[name] or [0]
        figures[f"{name}_peak_mib"] = _status(pid, "VmHWM") / 1024
        figures[f"{name}_first_mib"] = samples[0] / 1024
        figures[f"{name}_last_mib"] = samples[-1] / 1024
        print(
            f"{name}: peak RSS {figures[f'{name}_peak_mib']:,.0f} MiB (VmHWM); RSS first "
            f"{samples[0] / 1024:,.0f} MiB, last {samples[-1] / 1024:,.0f} MiB, "
            f"max sampled {max(samples) / 1024:,.0f} MiB"
        )
    return figures


def measure(
    people: int, interests: int, batch: int = 1000, concurrency: int = 8
) -> dict[str, float]:
    """Generate a file of that size in a temporary directory, import it, remove it."""
    path = Path(mkdtemp(prefix="roac-import-")) / "people.csv"
    try:
        generate(path, people, interests)
        with bench_stack("ingest", "matcher") as stack:
            return run(stack, path, people, batch, concurrency)
    finally:
        path.unlink(missing_ok=True)


def _imported(summary: str, what: str) -> int:
    """`contacts` or `interests` imported, from the import's summary (0 when missing)."""
    for line in summary.splitlines():
        if line.startswith(f"{what} imported:"):
            return int(line.split(":")[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--people", type=int, default=1_000_000, help="to generate, unless --file exists"
    )
    parser.add_argument(
        "--interests", type=int, default=5_000_000, help="to generate, unless --file exists"
    )
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--file", type=Path, help="reuse or keep the generated CSV here")
    args = parser.parse_args()
    path = args.file or Path(mkdtemp(prefix="roac-import-")) / "people.csv"
    if not path.exists():
        started = time.perf_counter()
        generate(path, args.people, args.interests)
        print(
            f"generated {path} ({path.stat().st_size / 1e6:,.0f} MB) in "
            f"{time.perf_counter() - started:,.1f} s"
        )
    with bench_stack("ingest", "matcher") as stack:
        run(stack, path, args.people, args.batch, args.concurrency)
    if args.file is None:
        path.unlink()


if __name__ == "__main__":
    main()
