"""The import file's line parser and readers (no I/O beyond an in-memory file)."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest

from services.tools.bulk_import import (
    Checkpoint,
    Importer,
    LineError,
    Options,
    Totals,
    parse_record,
    read_csv,
    read_csv_header,
    read_jsonl,
)
from shared.events import InterestKind


def test_a_row_with_a_name_is_a_person_and_one_with_a_topic_an_interest() -> None:
    person = parse_record(
        {"source": "crm", "external_id": "1", "name": "Ada", "tags": "berlin; mentors", "topic": ""}
    )
    assert person.contact is not None and person.interest is None
    assert person.contact.tags == ["berlin", "mentors"]
    interest = parse_record({"source": "crm", "external_id": "1", "topic": " Kites ", "kind": ""})
    assert interest.contact is None and interest.interest is not None
    assert interest.interest.topic == "kites" and interest.interest.kind is InterestKind.LIKES
    both = parse_record({"external_id": "1", "name": "Ada", "topic": "x"}, default_source="crm")
    assert both.contact is not None and both.interest is not None
    assert both.interest.source == "crm"


def test_json_lines_may_wrap_contact_and_interest() -> None:
    parsed = parse_record(
        {"contact": {"source": "crm", "external_id": "1", "name": "Ada", "tags": ["a"]}}
    )
    assert parsed.contact is not None and parsed.contact.tags == ["a"]
    with pytest.raises(LineError, match="unknown keys"):
        parse_record({"contact": {}, "other": 1})


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"source": "crm", "external_id": "1", "name": "B", "email": "nope"}, "email"),
        ({"source": "crm", "external_id": "1", "topic": "t", "kind": "loves"}, "kind"),
        ({"source": "crm", "name": "B"}, "external_id"),
        ({"source": "crm", "external_id": "1", "topic": "t", "weight": "11"}, "weight"),
        ({"source": "crm", "external_id": "1"}, "neither a person"),
        ({"source": "crm", "external_id": "1", "colour": "red"}, "unknown columns"),
    ],
)
def test_a_bad_line_says_why(fields: dict[str, str], reason: str) -> None:
    with pytest.raises(LineError, match=reason):
        parse_record(fields)


def test_csv_rows_carry_their_line_numbers_and_offsets() -> None:
    text = 'source,external_id,name,topic\ncrm,1,Ada,\n\ncrm,2,"Bo\nLind",\ncrm,3\ncrm,4,,"kites"\n'
    data = text.encode()
    header, offset = read_csv_header(io.BytesIO(data))
    assert header == ["source", "external_id", "name", "topic"]
    records = list(read_csv(io.BytesIO(data), header, offset, 2))
    assert [(r.line, r.last_line) for r in records] == [(2, 2), (4, 5), (6, 6), (7, 7)]
    assert records[2].fields is None and "2 cells" in (records[2].error or "")
    assert records[-1].end_offset == len(data)
    # Resuming at a record's end offset reads on from the next one.
    rest = list(read_csv(io.BytesIO(data), header, records[1].end_offset, 6))
    assert [r.line for r in rest] == [6, 7]


def test_json_lines_report_unreadable_lines() -> None:
    data = b'{"name": "a"}\n\n[1]\n{bad\n'
    records = list(read_jsonl(io.BytesIO(data), 0, 1))
    assert [(r.line, r.fields is None) for r in records] == [(1, False), (3, True), (4, True)]


def test_a_checkpoint_survives_a_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "f.csv.roac-import.json"
    Checkpoint("abc", 120, 7, Totals(lines=7, contacts=3)).save(path)
    loaded = Checkpoint.load(path)
    assert loaded is not None and (loaded.offset, loaded.line) == (120, 7)
    assert loaded.totals.contacts == 3
    assert Checkpoint.load(tmp_path / "missing") is None


def test_a_person_with_more_interests_than_a_request_takes_starts_a_new_batch() -> None:
    lines = "".join(f'{{"source": "crm", "external_id": "1", "topic": "t{i}"}}\n' for i in range(5))
    data = lines.encode()
    options = Options(url="http://x", api_key="k", format="jsonl", max_interests_per_person=2)
    importer = Importer(Path("unused.jsonl"), options, httpx.AsyncClient())
    batches = list(importer._batches(read_jsonl(io.BytesIO(data), 0, 1)))
    assert [[line for line, _ in b.interests] for b in batches] == [[1, 2], [3, 4], [5]]
    assert all(not b.rejected for b in batches)


def test_a_line_may_withdraw_an_interest_in_csv_or_json() -> None:
    row = parse_record(
        {
            "source": "crm",
            "external_id": "1",
            "topic": " Kites ",
            "kind": "seeks",
            "withdraw": "true",
        }
    )
    assert row.contact is None and row.interest is None and row.withdrawal is not None
    assert (row.withdrawal.topic, row.withdrawal.kind) == ("kites", InterestKind.SEEKS)
    every_kind = parse_record({"withdraw": {"external_id": "1", "topic": "kites"}}, "crm")
    assert every_kind.withdrawal is not None and every_kind.withdrawal.kind is None
    assert every_kind.withdrawal.source == "crm"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        (
            {"source": "crm", "external_id": "1", "topic": "t", "withdraw": "maybe"},
            "withdraw: true",
        ),
        (
            {"source": "crm", "external_id": "1", "name": "A", "topic": "t", "withdraw": "1"},
            "no name",
        ),
        ({"source": "crm", "external_id": "1", "withdraw": "yes"}, "topic"),
        (
            {"withdraw": {"source": "crm", "external_id": "1", "topic": "t"}, "contact": {}},
            "beside",
        ),
    ],
)
def test_a_bad_withdrawal_says_why(fields: dict[str, object], reason: str) -> None:
    with pytest.raises(LineError, match=reason):
        parse_record(fields)
