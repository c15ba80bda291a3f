"""`roac import FILE`: stream a CSV or JSON Lines file of people and interests into ingest.

A client of ingest's HTTP API (validation is exactly ingest's), never a way around it:

- streaming: the file is read a batch of lines at a time, with at most `concurrency` batches in
  flight, so memory stays flat whatever the file's size;
- every line is validated locally with the event models (ContactData, InterestData) first, so a
  bad line is reported by number and reason and the rest of its batch still goes (ingest refuses
  a request whole on any bad item);
- requests carry `X-Roac-Bulk: true`: the matcher stores what they bring but introduces nobody
  at once; the next round matches them (an import never floods people);
- resumable: `FILE.roac-import.json` records the byte offset up to which every batch was
  accepted, written after each confirmed batch in file order; a re-run continues from there.
  Each request carries an `Idempotency-Key` made of (file identity, batch start line, kind), so a
  batch re-sent after a crash is answered from ingest's idempotency store, not published twice.

The file format is in docs/import.md.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from shared.events import ContactData, InterestData, InterestWithdrawalData

CSV_COLUMNS = (
    "source",
    "external_id",
    "name",
    "email",
    "organization",
    "timezone",
    "tags",
    "topic",
    "kind",
    "weight",
    "withdraw",
)
_CONTACT_FIELDS = ("name", "email", "organization", "timezone", "tags")
_INTEREST_FIELDS = ("topic", "kind", "weight")
MAX_BATCH = 1000  # ingest's limit of items per request
CHECKPOINT_SUFFIX = ".roac-import.json"
REJECTED_SUFFIX = ".rejected.jsonl"
_RETRIES = 8


class LineError(ValueError):
    """A line that cannot be imported; the message says why."""


class ImportAborted(Exception):
    """Nothing more can be sent (a bad API key, ingest unreachable, a changed file)."""


@dataclass(frozen=True)
class Parsed:
    contact: ContactData | None
    interest: InterestData | None
    # An interest the person no longer holds (DELETE /v1/interests/...), never with the others.
    withdrawal: InterestWithdrawalData | None = None


def _reason(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"]) or "line"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def parse_record(record: dict[str, Any], default_source: str | None = None) -> Parsed:
    """One person, one interest, or both, from a line's fields (CSV cells or a JSON object).

    Empty cells are absent. `tags` is a list, or a string split on `;` or `|`. A JSON line may
    also be `{"contact": {...}}` or `{"interest": {...}}` (either or both keys). An interest to
    withdraw is `{"withdraw": {"source", "external_id", "topic", "kind"}}` (kind optional: every
    kind of the topic), or a CSV row with `withdraw` set to `true` and only the person, `topic`
    and `kind`."""
    if "withdraw" in record and isinstance(record["withdraw"], dict):
        extra = set(record) - {"withdraw"}
        if extra:
            raise LineError(f"unknown keys beside withdraw: {', '.join(sorted(extra))}")
        return Parsed(None, None, _withdrawal(_with_source(record["withdraw"], default_source)))
    if "contact" in record or "interest" in record:
        extra = set(record) - {"contact", "interest"}
        if extra:
            raise LineError(f"unknown keys beside contact/interest: {', '.join(sorted(extra))}")
        contact, interest = record.get("contact"), record.get("interest")
        if contact is not None and not isinstance(contact, dict):
            raise LineError("contact must be an object")
        if interest is not None and not isinstance(interest, dict):
            raise LineError("interest must be an object")
        return Parsed(
            _validate(ContactData, _with_source(contact, default_source)) if contact else None,
            _validate(InterestData, _with_source(interest, default_source)) if interest else None,
        )
    fields = {k: v for k, v in record.items() if v is not None and v != ""}
    unknown = set(fields) - set(CSV_COLUMNS)
    if unknown:
        raise LineError(f"unknown columns: {', '.join(sorted(unknown))}")
    fields = _with_source(fields, default_source)
    if "withdraw" in fields:
        if str(fields.pop("withdraw")).strip().lower() not in ("true", "yes", "1"):
            raise LineError("withdraw: true (this row's topic is withdrawn) or empty")
        beside = set(fields) - {"source", "external_id", "topic", "kind"}
        if beside:
            raise LineError(f"a withdrawal has no {', '.join(sorted(beside))}")
        return Parsed(None, None, _withdrawal(fields))
    if isinstance(fields.get("tags"), str):
        fields["tags"] = [t for t in fields["tags"].replace("|", ";").split(";") if t.strip()]
    ref: dict[str, Any] = {k: fields[k] for k in ("source", "external_id") if k in fields}
    has_contact = any(k in fields for k in _CONTACT_FIELDS)
    has_interest = any(k in fields for k in _INTEREST_FIELDS)
    if not has_contact and not has_interest:
        raise LineError("neither a person (name) nor an interest (topic)")
    contact = interest = None
    if has_contact:
        contact = _validate(
            ContactData, {**ref, **{k: fields[k] for k in _CONTACT_FIELDS if k in fields}}
        )
    if has_interest:
        interest = _validate(
            InterestData, {**ref, **{k: fields[k] for k in _INTEREST_FIELDS if k in fields}}
        )
    return Parsed(contact, interest)


def _with_source(fields: dict[str, Any], default_source: str | None) -> dict[str, Any]:
    if default_source and not fields.get("source"):
        return {**fields, "source": default_source}
    return fields


def _withdrawal(fields: dict[str, Any]) -> InterestWithdrawalData:
    try:
        return InterestWithdrawalData.model_validate(fields)
    except ValidationError as exc:
        raise LineError(_reason(exc)) from exc


def _validate(model: type[ContactData] | type[InterestData], data: dict[str, Any]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise LineError(_reason(exc)) from exc


@dataclass(frozen=True)
class Record:
    line: int  # the line it starts on, 1-based
    last_line: int  # the line it ends on (a quoted CSV cell may hold line breaks)
    end_offset: int  # byte offset just after it
    fields: dict[str, Any] | None  # None: unreadable
    error: str | None = None


class _CountingLines:
    """A binary file's lines as text, counting the bytes handed out (for checkpoints)."""

    def __init__(self, file: IO[bytes], offset: int) -> None:
        self._file = file
        self.offset = offset

    def __iter__(self) -> Iterator[str]:
        for raw in self._file:
            self.offset += len(raw)
            yield raw.decode("utf-8", errors="replace")


def read_csv(file: IO[bytes], header: list[str], offset: int, first_line: int) -> Iterator[Record]:
    """Rows after the header from `offset` (a row may span lines inside quotes)."""
    file.seek(offset)
    lines = _CountingLines(file, offset)
    reader = csv.reader(lines)
    line = first_line
    for row in reader:
        start, line = line, first_line + reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            yield Record(
                start,
                line - 1,
                lines.offset,
                None,
                f"{len(row)} cells, the header has {len(header)}",
            )
            continue
        yield Record(start, line - 1, lines.offset, dict(zip(header, row, strict=True)))


def read_csv_header(file: IO[bytes]) -> tuple[list[str], int]:
    """The header row's column names and the byte offset after it."""
    file.seek(0)
    raw = file.readline()
    text = raw.decode("utf-8-sig", errors="replace")
    header = [h.strip() for h in next(csv.reader([text]), [])]
    unknown = set(header) - set(CSV_COLUMNS)
    if not header or unknown:
        raise ImportAborted(
            f"the first line must name the columns ({', '.join(CSV_COLUMNS)}); "
            f"unknown: {', '.join(sorted(unknown)) or 'none given'}"
        )
    return header, len(raw)


def read_jsonl(file: IO[bytes], offset: int, first_line: int) -> Iterator[Record]:
    file.seek(offset)
    line = first_line
    for raw in file:
        offset += len(raw)
        current, line = line, line + 1
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except ValueError as exc:
            yield Record(current, current, offset, None, f"not JSON: {exc}")
            continue
        if not isinstance(value, dict):
            yield Record(current, current, offset, None, "not a JSON object")
            continue
        yield Record(current, current, offset, value)


def file_identity(path: Path) -> str:
    """Size and a digest of the first 1 MiB: enough to notice a different file on resume."""
    digest = hashlib.sha256(str(path.stat().st_size).encode())
    with path.open("rb") as f:
        digest.update(f.read(1 << 20))
    return digest.hexdigest()[:24]


@dataclass
class Totals:
    lines: int = 0  # last line number read
    contacts: int = 0
    interests: int = 0
    rejected: int = 0
    replayed_requests: int = 0
    withdrawals: int = 0


@dataclass
class Checkpoint:
    file_id: str
    offset: int
    line: int
    totals: Totals = field(default_factory=Totals)

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "file_id": self.file_id,
                    "offset": self.offset,
                    "line": self.line,
                    "totals": self.totals.__dict__,
                }
            )
        )
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Checkpoint | None:
        try:
            data = json.loads(path.read_text())
            return cls(data["file_id"], data["offset"], data["line"], Totals(**data["totals"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None


@dataclass
class Batch:
    index: int
    start_line: int
    end_line: int
    end_offset: int
    contacts: list[tuple[int, ContactData]] = field(default_factory=list)
    interests: list[tuple[int, InterestData]] = field(default_factory=list)
    withdrawals: list[tuple[int, InterestWithdrawalData]] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)


@dataclass
class Options:
    url: str
    api_key: str
    format: str  # "csv" or "jsonl"
    source: str | None = None
    batch: int = 500
    concurrency: int = 4
    restart: bool = False
    stop_after_batches: int | None = None  # a test hook: stop as if interrupted
    # Ingest's ROAC_INGEST_MAX_INTERESTS_PER_PERSON (interests of one person per request).
    max_interests_per_person: int = 100


@dataclass
class Outcome:
    totals: Totals
    resumed_from_line: int
    elapsed: float
    rejected_sample: list[tuple[int, str]]
    report: Path
    interrupted: bool = False


Progress = Callable[[int, int], None]  # (byte offset read, last line read)


def _payload(items: list[tuple[int, ContactData]] | list[tuple[int, InterestData]]) -> bytes:
    # Each item serialised by pydantic itself: model_dump plus json.dumps took 3 times as long.
    encoded = [item.model_dump_json(exclude_defaults=True).encode() for _, item in items]
    return b'{"items":[' + b",".join(encoded) + b"]}"


class Importer:
    def __init__(self, path: Path, options: Options, client: httpx.AsyncClient) -> None:
        self._path = path
        self._options = options
        self._client = client
        self.checkpoint_path = path.with_name(path.name + CHECKPOINT_SUFFIX)
        self.report_path = path.with_name(path.name + REJECTED_SUFFIX)
        self._sample: list[tuple[int, str]] = []
        self._refused: list[tuple[int, str]] = []  # by ingest despite local validation

    async def run(self, progress: Progress | None = None) -> Outcome:
        started = time.monotonic()
        options = self._options
        file_id = file_identity(self._path)
        checkpoint = None if options.restart else Checkpoint.load(self.checkpoint_path)
        if checkpoint is not None and checkpoint.file_id != file_id:
            raise ImportAborted(
                f"{self.checkpoint_path} belongs to another version of the file: "
                "pass --restart to import it from the start"
            )
        with self._path.open("rb") as file:
            if options.format == "csv":
                header, after_header = read_csv_header(file)
            else:
                header, after_header = [], 0
            if checkpoint is None:
                checkpoint = Checkpoint(file_id, after_header, 1 if header else 0)
                self.report_path.unlink(missing_ok=True)
            else:
                self._trim_report(checkpoint.line)
            resumed_from = checkpoint.line
            records = (
                read_csv(file, header, checkpoint.offset, checkpoint.line + 1)
                if options.format == "csv"
                else read_jsonl(file, checkpoint.offset, checkpoint.line + 1)
            )
            interrupted = await self._send_all(records, checkpoint, progress)
        if not interrupted:
            self.checkpoint_path.unlink(missing_ok=True)
        return Outcome(
            checkpoint.totals,
            resumed_from,
            time.monotonic() - started,
            self._sample,
            self.report_path,
            interrupted,
        )

    def _trim_report(self, up_to_line: int) -> None:
        """Keep the rejections of confirmed lines only: the rest are read again."""
        if not self.report_path.exists():
            return
        tmp = self.report_path.with_name(self.report_path.name + ".tmp")
        with self.report_path.open() as src, tmp.open("w") as dst:
            for row in src:
                try:
                    if json.loads(row)["line"] <= up_to_line:
                        dst.write(row)
                except (ValueError, KeyError, TypeError):
                    continue
        os.replace(tmp, self.report_path)

    def _batches(self, records: Iterator[Record]) -> Iterator[Batch]:
        size = max(1, min(self._options.batch, MAX_BATCH))
        limit = self._options.max_interests_per_person
        batch: Batch | None = None
        index = 0
        count = 0
        per_person: Counter[tuple[str, str]] = Counter()
        for record in records:
            parsed: Parsed | None = None
            error: str | None = None
            if record.fields is None:
                error = record.error or "unreadable"
            else:
                try:
                    parsed = parse_record(record.fields, self._options.source)
                except LineError as exc:
                    error = str(exc)
            interest = parsed.interest if parsed is not None else None
            person = (interest.source, interest.external_id) if interest is not None else None
            # Ingest takes at most `limit` interests of one person per request: a person with
            # more starts the next batch instead (nothing is refused for it).
            if batch is not None and person is not None and per_person[person] >= limit:
                yield batch
                batch, count = None, 0
            if batch is None:
                batch = Batch(index, record.line, record.last_line, record.end_offset)
                index += 1
                per_person.clear()
            batch.end_line, batch.end_offset = record.last_line, record.end_offset
            count += 1
            if error is not None:
                batch.rejected.append((record.line, error))
            elif parsed is not None:
                if parsed.contact is not None:
                    batch.contacts.append((record.line, parsed.contact))
                if interest is not None and person is not None:
                    batch.interests.append((record.line, interest))
                    per_person[person] += 1
                if parsed.withdrawal is not None:
                    batch.withdrawals.append((record.line, parsed.withdrawal))
            if count >= size:
                yield batch
                batch, count = None, 0
        if batch is not None:
            yield batch

    async def _send_all(
        self, records: Iterator[Record], checkpoint: Checkpoint, progress: Progress | None
    ) -> bool:
        """Send batches with at most `concurrency` in flight; advance the checkpoint over the
        batches confirmed in file order. True when stopped early (the test hook)."""
        options = self._options
        slots = asyncio.Semaphore(max(1, options.concurrency))
        # Confirmed batches waiting for an earlier one: their end and counts only, not items.
        done: dict[int, tuple[int, int, int, int, int, int, int]] = {}
        next_index = 0
        confirmed = 0
        failure: list[BaseException] = []
        tasks: set[asyncio.Task[None]] = set()

        def advance() -> None:
            nonlocal next_index, confirmed
            while next_index in done:
                end_offset, end_line, contacts, interests, rejected, replayed, withdrawn = done.pop(
                    next_index
                )
                checkpoint.offset, checkpoint.line = end_offset, end_line
                checkpoint.totals.lines = end_line
                checkpoint.totals.contacts += contacts
                checkpoint.totals.interests += interests
                checkpoint.totals.rejected += rejected
                checkpoint.totals.replayed_requests += replayed
                checkpoint.totals.withdrawals += withdrawn
                checkpoint.save(self.checkpoint_path)
                next_index += 1
                confirmed += 1

        async def send(batch: Batch) -> None:
            try:
                counts = await self._send(batch, checkpoint.file_id)
                done[batch.index] = (batch.end_offset, batch.end_line, *counts)
                advance()
            except BaseException as exc:  # noqa: BLE001 - handed to the loop below
                failure.append(exc)
            finally:
                slots.release()

        with self.report_path.open("a") as report:
            for batch in self._batches(records):
                if options.stop_after_batches is not None and batch.index >= (
                    options.stop_after_batches
                ):
                    break
                await slots.acquire()
                if failure:
                    break
                refused, self._refused = self._refused, []
                for line, reason in [*refused, *batch.rejected]:
                    report.write(json.dumps({"line": line, "reason": reason}) + "\n")
                    if len(self._sample) < 20:
                        self._sample.append((line, reason))
                task = asyncio.create_task(send(batch))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                if progress is not None:
                    progress(batch.end_offset, batch.end_line)
            if tasks:
                await asyncio.gather(*tasks)
            for line, reason in self._refused:
                report.write(json.dumps({"line": line, "reason": reason}) + "\n")
                if len(self._sample) < 20:
                    self._sample.append((line, reason))
        if failure:
            raise failure[0]
        return options.stop_after_batches is not None and confirmed >= options.stop_after_batches

    async def _send(self, batch: Batch, file_id: str) -> tuple[int, int, int, int, int]:
        """Post the batch's contacts, then its interests, then withdraw its withdrawals (one
        DELETE each: ingest has no batch of them over HTTP); (contacts, interests, rejected,
        replayed requests, withdrawals)."""
        contacts = interests = replayed = 0
        rejected = len(batch.rejected)
        for path, kind, items in (
            ("/v1/contacts", "c", batch.contacts),
            ("/v1/interests", "i", batch.interests),
        ):
            if not items:
                continue
            key = f"roac-import-{file_id}-{batch.start_line}-{kind}"
            outcome = await self._post(path, key, _payload(items))
            if isinstance(outcome, str):
                # Ingest refused what passed local validation (it should not happen): the
                # lines are reported rather than the import stopped.
                rejected += len(items)
                self._refused.extend((line, f"refused by ingest: {outcome}") for line, _ in items)
                continue
            replayed += outcome
            if kind == "c":
                contacts += len(items)
            else:
                interests += len(items)
        withdrawn = 0
        for line, withdrawal in batch.withdrawals:
            path = (
                f"/v1/interests/{quote(withdrawal.source, safe='')}/"
                f"{quote(withdrawal.external_id, safe='')}"
            )
            query = {"topic": withdrawal.topic}
            if withdrawal.kind is not None:
                query["kind"] = withdrawal.kind.value
            key = f"roac-import-{file_id}-{line}-w"
            outcome = await self._post(path, key, b"", method="DELETE", params=query)
            if isinstance(outcome, str):
                rejected += 1
                self._refused.append((line, f"refused by ingest: {outcome}"))
                continue
            replayed += outcome
            withdrawn += 1
        return contacts, interests, rejected, replayed, withdrawn

    async def _post(
        self,
        path: str,
        key: str,
        body: bytes,
        *,
        method: str = "POST",
        params: dict[str, str] | None = None,
    ) -> int | str:
        """1 when answered from the idempotency store, 0 when published now, or the reason
        ingest refused the request (422). Retries what is worth retrying."""
        headers = {
            "Authorization": f"Bearer {self._options.api_key}",
            "Content-Type": "application/json",
            "Idempotency-Key": key,
            "X-Roac-Bulk": "true",
        }
        delay = 0.5
        last = ""
        for _ in range(_RETRIES):
            try:
                response = await self._client.request(
                    method, path, content=body or None, headers=headers, params=params
                )
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 202:
                    return 1 if response.headers.get("idempotent-replayed") == "true" else 0
                if response.status_code in (401, 403):
                    raise ImportAborted(f"ingest refused the API key ({response.status_code})")
                if response.status_code == 422:
                    return _problem_text(response)
                if response.status_code == 409 and "Retry-After" not in response.headers:
                    raise ImportAborted(
                        f"Idempotency-Key {key} was used for other content: the file changed "
                        "since a previous import; pass --restart"
                    )
                last = f"HTTP {response.status_code}: {_problem_text(response)}"
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
        raise ImportAborted(f"ingest did not accept a batch after {_RETRIES} attempts: {last}")


def _problem_text(response: httpx.Response) -> str:
    try:
        problem = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(problem, dict):
        errors = problem.get("errors")
        if isinstance(errors, list) and errors:
            return "; ".join(
                f"{e.get('field')}: {e.get('message')}" for e in errors[:3] if isinstance(e, dict)
            )
        return str(problem.get("detail") or problem.get("title") or problem)[:200]
    return str(problem)[:200]


def guess_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    return "csv"
