from datetime import UTC, datetime, timedelta

import pytest

from services.ingest.idempotency import (
    ABANDONED_AFTER,
    InvalidKey,
    Stored,
    Verdict,
    check_key,
    event_id,
    event_ids,
    fingerprint,
    judge,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
PRINT = fingerprint("POST", "/v1/contacts", b'{"a": 1}')


def test_keys_are_printable_tokens() -> None:
    assert check_key("sync-2026-01-01T00:00:00Z/42") == "sync-2026-01-01T00:00:00Z/42"
    for bad in ("", "has space", "x" * 256, "naïve"):
        with pytest.raises(InvalidKey):
            check_key(bad)


def test_fingerprints_tell_requests_apart() -> None:
    assert fingerprint("POST", "/v1/contacts", b'{"a": 1}') == PRINT
    assert fingerprint("POST", "/v1/interests", b'{"a": 1}') != PRINT
    assert fingerprint("POST", "/v1/contacts", b'{"a": 2}') != PRINT


def test_event_ids_are_stable_per_key_and_item() -> None:
    assert event_id("crm", "k", 0) == event_id("crm", "k", 0)
    assert len({event_id("crm", "k", 0), event_id("crm", "k", 1), event_id("forms", "k", 0)}) == 3


def test_verdicts() -> None:
    done = Stored(PRINT, "done", {"accepted": 1}, NOW)
    assert judge(done, PRINT, NOW) is Verdict.REPLAY
    assert judge(done, b"other", NOW) is Verdict.CONFLICT
    pending = Stored(PRINT, "pending", None, NOW)
    assert judge(pending, PRINT, NOW + timedelta(seconds=5)) is Verdict.IN_PROGRESS
    assert judge(pending, PRINT, NOW + ABANDONED_AFTER + timedelta(seconds=1)) is Verdict.PROCEED


def test_event_ids_of_a_batch_are_each_items_event_id() -> None:
    indexes = [0, 1, 7, 10, 999]
    assert event_ids("crm", "key-1", indexes) == [event_id("crm", "key-1", i) for i in indexes]
