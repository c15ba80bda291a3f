"""The console's audit erasure, its pure parts: which people an action's row names, how a
mention is replaced in a row's target, detail and people (and only a whole mention), what the
matcher's answers mean (a merged person is known, a down or failing matcher proves nothing),
and how a sweep walks a long list, stopping when the matcher does not answer."""

from __future__ import annotations

import pytest

from services.console.audit_people import (
    ERASED,
    AuditRow,
    forget_in_row,
    forget_in_text,
    people_named,
    ref_of,
)
from services.console.erasure_sweep import (
    NO_SUCH_IDENTITY,
    Answer,
    AuditErasureSweep,
    answer_of,
    next_cursor,
    to_forget,
)
from services.console.people_pages import people_of_action


def test_an_action_names_its_person_and_the_other_of_a_pairing() -> None:
    assert people_of_action("crm", "ada-1", "pause", {}) == ["crm/ada-1"]
    assert people_of_action("crm", "ada-1", "block", {"other": " CRM/bob-2 "}) == [
        "crm/ada-1",
        "crm/bob-2",
    ]
    # The other of a pairing counts only for a block, and only typed as source/id.
    assert people_of_action("crm", "ada-1", "erase", {"other": "crm/bob-2"}) == ["crm/ada-1"]
    assert people_of_action("crm", "ada-1", "block", {"other": "bob"}) == ["crm/ada-1"]


def test_people_are_recorded_once_and_the_placeholder_is_no_person() -> None:
    assert people_named(["crm/a", "crm/b", "crm/a", "", ERASED]) == ["crm/a", "crm/b"]
    assert ref_of("crm/a/b") == ("crm", "a/b")  # an id may hold a slash
    for not_a_person in (ERASED, "crm/", "/a", "nobody"):
        assert ref_of(not_a_person) is None


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("person crm/bob-2", ERASED),
        ("never with person crm/bob-2; console-block-1", f"never with {ERASED}; console-block-1"),
        (
            "merge m undone: person crm/bob-2, person crm/cy apart again; c",
            f"merge m undone: {ERASED}, person crm/cy apart again; c",
        ),
        (
            "merge m undone: person crm/cy, person crm/bob-2 apart again; c",
            f"merge m undone: person crm/cy, {ERASED} apart again; c",
        ),
        # Only a whole mention: another person whose id starts with this one's stays named.
        ("never with person crm/bob-20; c", "never with person crm/bob-20; c"),
        ("person crm/bob-2x", "person crm/bob-2x"),
        ("person crm/bob-2/x", "person crm/bob-2/x"),
        ("aperson crm/bob-2", "aperson crm/bob-2"),
        ("", ""),
        ("paused until 2027-01-04; console-pause-1", "paused until 2027-01-04; console-pause-1"),
    ],
)
def test_a_mention_is_replaced_only_where_the_console_writes_one(text: str, kept: str) -> None:
    assert forget_in_text(text, "crm/bob-2") == kept


def test_forgetting_a_person_replaces_target_detail_and_people_and_keeps_the_others() -> None:
    row = AuditRow("person crm/ada-1", "never with person crm/bob-2; c", ["crm/ada-1", "crm/bob-2"])
    assert forget_in_row(row, "crm/bob-2") == AuditRow(
        "person crm/ada-1", f"never with {ERASED}; c", ["crm/ada-1", ERASED]
    )
    assert forget_in_row(row, "crm/ada-1") == AuditRow(
        ERASED, "never with person crm/bob-2; c", [ERASED, "crm/bob-2"]
    )
    assert forget_in_row(row, "crm/cy") == row


def test_only_the_matchers_no_such_identity_means_erased() -> None:
    assert answer_of(200, "") is Answer.KNOWN  # a merged person answers 200 with the survivor
    assert answer_of(404, NO_SUCH_IDENTITY) is Answer.GONE
    # A matcher down (the client's 502), failing, refusing the key, or another route's 404.
    for status, detail in [(502, "not reachable (ConnectError)"), (500, "x"), (503, "x")]:
        assert answer_of(status, detail) is Answer.UNANSWERED
    for status, detail in [(403, "not on this source"), (401, "x"), (404, "Not Found")]:
        assert answer_of(status, detail) is Answer.UNANSWERED
    answers = {"crm/a": Answer.KNOWN, "crm/b": Answer.GONE, "crm/c": Answer.UNANSWERED}
    assert to_forget(answers) == ["crm/b"]


def test_a_long_list_is_walked_by_batches_and_a_stopped_sweep_starts_where_it_did() -> None:
    assert next_cursor(["a/1", "a/2"], 2, True, None) == "a/2"  # a full batch: go on after it
    assert next_cursor(["a/3"], 2, True, "a/2") is None  # the end: from the start next time
    assert next_cursor([], 2, True, "a/2") is None
    assert next_cursor(["a/3", "a/4"], 2, False, "a/2") == "a/2"  # gave up: the same again


class _AuditList:
    """The audit list's people, in memory: enough for the sweep's walk (the SQL is tested
    against PostgreSQL in tests/e2e/test_console_audit_erasure.py)."""

    def __init__(self, people: list[str]) -> None:
        self.people = sorted(people)
        self.forgotten: list[str] = []

    async def audited_people(self, after: str | None, limit: int) -> list[str]:
        return [p for p in self.people if after is None or p > after][:limit]

    async def forget_person(self, person: str) -> int:
        self.forgotten.append(person)
        self.people.remove(person)
        return 1


async def test_a_sweep_forgets_the_gone_and_stops_when_the_matcher_stops_answering() -> None:
    audit = _AuditList([f"crm/{n}" for n in range(10)])
    answers = {"crm/1": Answer.GONE, "crm/2": Answer.KNOWN}
    asked: list[str] = []

    async def ask(source: str, external_id: str) -> Answer:
        asked.append(f"{source}/{external_id}")
        return answers.get(f"{source}/{external_id}", Answer.KNOWN)

    sweep = AuditErasureSweep(audit, ask, interval=1, people_per_sweep=4, questions_per_second=1e6)
    counts = await sweep.sweep_once()
    assert (counts.asked, counts.forgotten, counts.unanswered) == (4, 1, 0)
    assert audit.forgotten == ["crm/1"]
    assert asked == ["crm/0", "crm/1", "crm/2", "crm/3"]

    # The matcher stops answering: three in a row, and the sweep gives up, forgetting nobody.
    async def no_answer(source: str, external_id: str) -> Answer:
        asked.append(f"{source}/{external_id}")
        return Answer.UNANSWERED

    sweep._ask = no_answer
    asked.clear()
    counts = await sweep.sweep_once()
    assert (counts.asked, counts.forgotten, counts.unanswered) == (3, 0, 3)
    assert asked == ["crm/4", "crm/5", "crm/6"]
    # ... and asks the same people again next time.
    sweep._ask = ask
    asked.clear()
    await sweep.sweep_once()
    assert asked[0] == "crm/4"
