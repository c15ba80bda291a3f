"""What `roac import` shows: a progress bar while importing, then a summary (bulk_import.py does
the work)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from services.tools.bulk_import import (
    ImportAborted,
    Importer,
    Options,
    Outcome,
    guess_format,
)

SHOWN_REJECTIONS = 20


def run_import(
    path: Path,
    *,
    url: str,
    api_key: str,
    format: str | None,
    source: str | None,
    batch: int,
    concurrency: int,
    restart: bool,
    progress: bool,
    stop_after_batches: int | None,
    max_interests_per_person: int = 100,
) -> int:
    """Exit code: 0 all imported, 1 some lines rejected, 2 not possible, 3 stopped early."""
    err = Console(stderr=True)
    if not path.is_file():
        err.print(f"no such file: {path}")
        return 2
    options = Options(
        url=url,
        api_key=api_key,
        format=format or guess_format(path),
        source=source,
        batch=batch,
        concurrency=concurrency,
        restart=restart,
        stop_after_batches=stop_after_batches,
        max_interests_per_person=max_interests_per_person,
    )
    try:
        outcome = asyncio.run(_run(path, options, progress and err.is_terminal, err))
    except ImportAborted as exc:
        err.print(f"import stopped: {exc}")
        err.print("what was confirmed is kept; run the same command again to resume")
        return 2
    except KeyboardInterrupt:
        err.print("interrupted; run the same command again to resume")
        return 130
    _summary(outcome, Console(file=sys.stdout, highlight=False, soft_wrap=True))
    if outcome.interrupted:
        return 3
    return 1 if outcome.totals.rejected else 0


async def _run(path: Path, options: Options, show: bool, console: Console) -> Outcome:
    total = await asyncio.to_thread(lambda: path.stat().st_size)
    limits = httpx.Limits(max_connections=options.concurrency * 2)
    async with httpx.AsyncClient(base_url=options.url, timeout=60, limits=limits) as client:
        importer = Importer(path, options, client)
        with Progress(
            TextColumn("[bold]importing"),
            BarColumn(),
            DownloadColumn(),
            TextColumn("line {task.fields[line]:,}"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not show,
        ) as bar:
            task = bar.add_task("import", total=total, line=0, rate="")
            loop = asyncio.get_running_loop()
            started = loop.time()
            first: list[int] = []

            def advance(offset: int, line: int) -> None:
                if not first:
                    first.append(line)
                seconds = loop.time() - started
                rate = f"{(line - first[0]) / seconds:,.0f} lines/s" if seconds > 0 else ""
                bar.update(task, completed=offset, line=line, rate=rate)

            return await importer.run(advance)


def _summary(outcome: Outcome, out: Console) -> None:
    t = outcome.totals
    if outcome.interrupted:
        out.print(f"stopped early after line {t.lines}: run again to resume")
    if outcome.resumed_from_line > 1:
        out.print(f"resumed after line {outcome.resumed_from_line}")
    out.print(f"lines read: {t.lines}")
    out.print(f"contacts imported: {t.contacts}")
    out.print(f"interests imported: {t.interests}")
    if t.withdrawals:
        out.print(f"interests withdrawn: {t.withdrawals}")
    # Merging happens in the matcher as it applies the events, after ingest confirmed them.
    out.print("merged: by the matcher as it applies them (roac_matcher_merges_total)")
    out.print(f"rejected: {t.rejected}")
    for line, reason in _first_rejections(outcome):
        out.print(f"  line {line}: {reason}")
    if t.rejected > SHOWN_REJECTIONS:
        out.print(f"  ... {t.rejected - SHOWN_REJECTIONS} more")
    if t.rejected:
        out.print(f"every rejected line: {outcome.report}")
    if t.replayed_requests:
        out.print(f"requests answered from ingest's idempotency store: {t.replayed_requests}")
    rate = (t.contacts + t.interests) / outcome.elapsed if outcome.elapsed > 0 else 0.0
    out.print(f"elapsed: {outcome.elapsed:.1f} s ({rate:,.0f} items/s this run)")
    out.print("imported interests feed the next round: nobody was introduced at once")


def _first_rejections(outcome: Outcome) -> list[tuple[int, str]]:
    """From the report (it also holds the lines rejected before a resume)."""
    found: list[tuple[int, str]] = []
    if outcome.report.exists():
        with outcome.report.open() as report:
            for row in report:
                entry = json.loads(row)
                found.append((int(entry["line"]), str(entry["reason"])))
                if len(found) >= SHOWN_REJECTIONS:
                    break
    return sorted(found) if found else outcome.rejected_sample[:SHOWN_REJECTIONS]
