"""`roac import` end to end: the real CLI as a subprocess against the three services."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest

from tests.e2e.conftest import Stack, new_person, run_id, zone_at
from tests.support.infra import API_KEY

pytestmark = pytest.mark.e2e

HEADER = "source,external_id,name,email,organization,timezone,tags,topic,kind,weight\n"


def _import(stack: Stack, path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *(sys.executable, "-m", "services.cli", "import", str(path)),
            *("--url", stack.ingest_url, "--api-key", API_KEY, *args),
        ],
        env={**os.environ, **stack.env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _counts(stack: Stack, run: str) -> tuple[int, int, int]:
    """(people with a name, interests, inbox rows) of this run in the matcher's database."""

    async def query() -> tuple[int, int, int]:
        conn = await asyncpg.connect(stack.infra.database_url)
        try:
            people = await conn.fetchval(
                "SELECT count(*) FROM matcher.identities i JOIN matcher.contacts c "
                "ON c.id = i.contact_id WHERE i.external_id LIKE $1 AND c.name IS NOT NULL",
                f"{run}-%",
            )
            interests = await conn.fetchval(
                "SELECT count(*) FROM matcher.interests n JOIN matcher.identities i "
                "ON i.contact_id = n.contact_id WHERE i.external_id LIKE $1",
                f"{run}-%",
            )
            inbox = await conn.fetchval("SELECT count(*) FROM messaging.inbox")
            return int(people), int(interests), int(inbox)
        finally:
            await conn.close()

    return asyncio.run(query())


def _wait_for(stack: Stack, run: str, people: int, interests: int) -> tuple[int, int, int]:
    deadline = time.monotonic() + 20
    counts = _counts(stack, run)
    while time.monotonic() < deadline and counts[:2] != (people, interests):
        time.sleep(0.2)
        counts = _counts(stack, run)
    return counts


def _person(run: str, i: int) -> str:
    return f"e2e,{run}-{i},Person {i} {run},p{i}.{run}@example.org,Org {i},{zone_at(12)},,,,\n"


def test_import_reports_each_bad_line_and_introduces_nobody(stack: Stack, tmp_path: Path) -> None:
    run = run_id()
    rare = f"kite aerial photography {run}"
    lines = [HEADER]
    lines += [_person(run, i) for i in range(4)]  # lines 2-5
    # Two share a rare topic, two have one each: posted live, the two would be introduced
    # (test_live_control_the_same_shape_without_bulk_is_introduced).
    lines += [f"e2e,{run}-{i},,,,,,{rare},likes,\n" for i in range(2)]  # lines 6-7
    lines += [f"e2e,{run}-{i},,,,,,hobby {i} {run},likes,\n" for i in (2, 3)]  # lines 8-9
    lines.append(f"e2e,{run}-9,Bad Mail,not-an-email,,,,,,\n")  # line 10
    lines.append(f"e2e,{run}-0,,,,,,{rare} too,loves,\n")  # line 11
    lines.append(f"e2e,,No Id,noid.{run}@example.org,,,,,,\n")  # line 12
    lines.append(f"e2e,{run}-3,,,,,,other {run},offers,3\n")  # line 13
    path = tmp_path / "people.csv"
    path.write_text("".join(lines))

    result = _import(stack, path, "--batch", "4")

    assert result.returncode == 1, result.stdout + result.stderr  # 1: some lines rejected
    out = result.stdout
    assert "contacts imported: 4" in out and "interests imported: 5" in out, out
    assert "rejected: 3" in out, out
    assert "line 10: email" in out, out
    assert "line 11: kind" in out, out
    assert "line 12: external_id" in out, out
    report = [
        json.loads(r) for r in (tmp_path / "people.csv.rejected.jsonl").read_text().splitlines()
    ]
    assert [r["line"] for r in report] == [10, 11, 12]
    assert not (tmp_path / "people.csv.roac-import.json").exists()  # done: no checkpoint left

    assert _wait_for(stack, run, 4, 5)[:2] == (4, 5)
    # Two people share a rare topic: live matching would introduce them at once.
    time.sleep(3)
    for i in range(4):
        assert stack.sink.to(f"p{i}.{run}@example.org") == []


def test_live_control_the_same_shape_without_bulk_is_introduced(stack: Stack) -> None:
    """Without X-Roac-Bulk, what the import test sends introduces the two at once."""
    run = run_id()
    rare = f"kite aerial photography {run}"
    people = [new_person(run, i) for i in range(4)]
    topics = [rare, rare, f"hobby 2 {run}", f"hobby 3 {run}"]
    with stack.client() as client:
        assert client.post("/v1/contacts", json={"items": people}).status_code == 202
        items = [
            {"source": "e2e", "external_id": f"{run}-{i}", "topic": topic}
            for i, topic in enumerate(topics)
        ]
        assert client.post("/v1/interests", json={"items": items}).status_code == 202
    assert stack.sink.wait_for(people[0]["email"], within=15)


def test_import_resumes_after_an_interrupt_without_importing_twice(
    stack: Stack, tmp_path: Path
) -> None:
    run = run_id()
    lines = [HEADER]
    for i in range(20):
        lines.append(_person(run, i))
        lines.append(f"e2e,{run}-{i},,,,,,topic {i % 3} {run},likes,\n")
    path = tmp_path / "big.csv"
    path.write_text("".join(lines))
    checkpoint = tmp_path / "big.csv.roac-import.json"

    first = _import(stack, path, "--batch", "5", "--stop-after-batches", "3")
    assert first.returncode == 3, first.stdout + first.stderr
    saved = json.loads(checkpoint.read_text())
    assert saved["line"] == 16 and saved["totals"]["contacts"] == 8
    shutil.copy(checkpoint, tmp_path / "early-checkpoint.json")

    second = _import(stack, path, "--batch", "5")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resumed after line 16" in second.stdout
    assert "contacts imported: 20" in second.stdout, second.stdout
    assert "interests imported: 20" in second.stdout, second.stdout
    assert not checkpoint.exists()
    people, interests, inbox = _wait_for(stack, run, 20, 20)
    assert (people, interests) == (20, 20)

    # A crash after ingest accepted batches but before the checkpoint recorded them: the
    # batches are sent again and answered from ingest's idempotency store.
    shutil.copy(tmp_path / "early-checkpoint.json", checkpoint)
    third = _import(stack, path, "--batch", "5")
    assert third.returncode == 0, third.stdout + third.stderr
    assert "requests answered from ingest's idempotency store: 10" in third.stdout, third.stdout
    time.sleep(2)
    assert _counts(stack, run) == (20, 20, inbox)  # nothing new reached the matcher


def test_import_of_json_lines(stack: Stack, tmp_path: Path) -> None:
    run = run_id()
    rows = [
        {"contact": {"source": "e2e", "external_id": f"{run}-0", "name": "Jo", "tags": ["x"]}},
        {"interest": {"source": "e2e", "external_id": f"{run}-0", "topic": f"jsonl {run}"}},
        {"external_id": f"{run}-1", "name": "Flat", "topic": f"jsonl {run}", "kind": "seeks"},
    ]
    text = "\n".join(json.dumps(r) for r in rows[:2]) + "\n{not json\n" + json.dumps(rows[2])
    path = tmp_path / "people.jsonl"
    path.write_text(text + "\n")

    result = _import(stack, path, "--source", "e2e")

    assert result.returncode == 1, result.stdout + result.stderr
    assert "line 3: not JSON" in result.stdout, result.stdout
    assert "contacts imported: 2" in result.stdout and "interests imported: 2" in result.stdout
    assert _wait_for(stack, run, 2, 2)[:2] == (2, 2)


def test_import_withdraws_interests_named_in_the_file(stack: Stack, tmp_path: Path) -> None:
    """A CSV row with `withdraw` set, and a JSON line `{"withdraw": ...}`: the matcher no
    longer holds those interests, the others stay (one DELETE each, like an integration's)."""
    run = run_id()
    csv_path = tmp_path / "declare.csv"
    csv_path.write_text(
        HEADER
        + _person(run, 0)
        + f"e2e,{run}-0,,,,,,kites {run},,\n"
        + f"e2e,{run}-0,,,,,,bees {run},seeks,\n"
        + f"e2e,{run}-0,,,,,,owls {run},,\n"
    )
    assert _import(stack, csv_path).returncode == 0
    assert _wait_for(stack, run, 1, 3)[:2] == (1, 3)
    withdraw_csv = tmp_path / "withdraw.csv"
    withdraw_csv.write_text(
        "source,external_id,topic,kind,withdraw\n" + f"e2e,{run}-0,kites {run},,true\n"
    )
    result = _import(stack, withdraw_csv)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "interests withdrawn: 1" in result.stdout, result.stdout
    withdraw_jsonl = tmp_path / "withdraw.jsonl"
    withdraw_jsonl.write_text(
        json.dumps({"withdraw": {"external_id": f"{run}-0", "topic": f"bees {run}"}}) + "\n"
    )
    result = _import(stack, withdraw_jsonl, "--source", "e2e")
    assert result.returncode == 0, result.stdout + result.stderr
    assert _wait_for(stack, run, 1, 1)[:2] == (1, 1)  # owls stay
    # Again: answered from ingest's idempotency store, nothing withdrawn twice, nothing new.
    again = _import(stack, withdraw_jsonl, "--source", "e2e", "--restart")
    assert again.returncode == 0 and "idempotency store: 1" in again.stdout, again.stdout
