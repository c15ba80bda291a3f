import hashlib
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
    legacy_fingerprint,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SERVER_KEY = b"k" * 32
PRINT = fingerprint("POST", "/v1/contacts", b'{"a": 1}', SERVER_KEY)


def test_keys_are_printable_tokens() -> None:
    assert check_key("sync-2026-01-01T00:00:00Z/42") == "sync-2026-01-01T00:00:00Z/42"
    for bad in ("", "has space", "x" * 256, "naïve"):
        with pytest.raises(InvalidKey):
            check_key(bad)


def test_fingerprints_tell_requests_apart() -> None:
    assert fingerprint("POST", "/v1/contacts", b'{"a": 1}', SERVER_KEY) == PRINT
    assert fingerprint("POST", "/v1/interests", b'{"a": 1}', SERVER_KEY) != PRINT
    assert fingerprint("POST", "/v1/contacts", b'{"a": 2}', SERVER_KEY) != PRINT


def test_a_fingerprint_cannot_be_computed_from_a_guessed_request() -> None:
    # A keyed erasure's path names the person: without the server key, guessing it is useless.
    guessed = hashlib.sha256(b"DELETE /v1/contacts/crm/42\n").digest()
    assert fingerprint("DELETE", "/v1/contacts/crm/42", b"", SERVER_KEY) != guessed
    assert fingerprint("DELETE", "/v1/contacts/crm/42", b"", b"j" * 32) != fingerprint(
        "DELETE", "/v1/contacts/crm/42", b"", SERVER_KEY
    )
    assert legacy_fingerprint("DELETE", "/v1/contacts/crm/42", b"") == guessed


def test_a_request_first_seen_before_keyed_fingerprints_is_still_the_same_request() -> None:
    legacy = legacy_fingerprint("POST", "/v1/contacts", b'{"a": 1}')
    done = Stored(legacy, "done", {"accepted": 1}, NOW)
    assert judge(done, PRINT, NOW, legacy=legacy) is Verdict.REPLAY
    assert judge(done, PRINT, NOW) is Verdict.CONFLICT


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
