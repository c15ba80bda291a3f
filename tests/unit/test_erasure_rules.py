"""The pure rules behind a complete erasure: keyed tombstones (and the legacy fallback), the
erasure key's strength check, the parking queues' policy, and the neutral link page."""

from __future__ import annotations

import hashlib
import json

import pytest
from pydantic import ValidationError

from services.notifier import link_pages
from services.notifier.answers import Outcome
from services.notifier.routes import _RESULT
from shared.erasure import ErasureDigests, erasure_digest, legacy_digest
from shared.parking import (
    PARKING_QUEUES,
    POLICY_NAME,
    POLICY_PATTERN,
    ParkingBounds,
    vhost_of,
)
from shared.secret_policy import new_secret
from shared.settings import Settings

KEY = new_secret().encode()


def test_a_tombstone_is_an_hmac_under_the_server_key_not_a_hash_of_the_id() -> None:
    keyed = erasure_digest("crm", "42", KEY)
    assert len(keyed) == 32
    assert keyed != hashlib.sha256(b"crm\x0042").digest()
    assert keyed != erasure_digest("crm", "42", new_secret().encode())  # another key, another
    assert erasure_digest("crm", "42") == legacy_digest("crm", "42")
    assert legacy_digest("crm", "42") == hashlib.sha256(b"crm\x0042").digest()


def test_lookups_find_keyed_and_legacy_tombstones_and_map_them_back() -> None:
    digests = ErasureDigests(KEY)
    refs = [("crm", "42"), ("crm", "Zoë-東京")]
    lookups = digests.lookups(refs)
    assert len(lookups) == 4
    for ref in refs:
        assert lookups[erasure_digest(*ref, KEY)] == ref
        assert lookups[legacy_digest(*ref)] == ref
    unkeyed = ErasureDigests(None)
    assert not unkeyed.keyed
    assert unkeyed.lookups(refs) == {legacy_digest(*r): r for r in refs}
    assert unkeyed.digest("crm", "42") == legacy_digest("crm", "42")


def test_the_erasure_key_is_held_to_the_secret_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROAC_ERASURE_KEY", "replace-with-a-long-random-secret")
    with pytest.raises(ValidationError, match="ROAC_ERASURE_KEY is refused"):
        Settings()
    strong = new_secret()
    monkeypatch.setenv("ROAC_ERASURE_KEY", strong)
    settings = Settings()
    assert settings.erasure_key_bytes == strong.encode()
    assert strong not in repr(settings)
    monkeypatch.setenv("ROAC_ERASURE_KEY", "")
    assert Settings().erasure_key_bytes is None


def test_the_parking_policy_bounds_every_parking_queue_and_nothing_else() -> None:
    import re

    pattern = re.compile(POLICY_PATTERN)
    assert set(PARKING_QUEUES) == {
        "roac.matcher.dlq",
        "roac.notifier.dlq",
        "roac.notifier.deliveries.dlq",
        "roac.ingest.ingress.dlq",
    }
    assert all(pattern.search(q) for q in PARKING_QUEUES)
    for other in ("roac.matcher", "roac.notifier.deliveries", "roac.notifier.delay.5s", "x.dlq"):
        assert not pattern.search(other)


def test_the_parking_policy_definition_and_how_it_is_applied() -> None:
    bounds = ParkingBounds(ttl_seconds=14 * 86_400, max_messages=100_000, max_bytes=512 << 20)
    assert bounds.definition() == {
        "message-ttl": 1_209_600_000,
        "max-length": 100_000,
        "max-length-bytes": 536_870_912,
        "overflow": "drop-head",
    }
    args = bounds.rabbitmqctl_args("roac-test/1")
    assert args[:4] == ["rabbitmqctl", "set_policy", "-p", "roac-test/1"]
    assert args[-3:-1] == [POLICY_NAME, POLICY_PATTERN]
    assert json.loads(args[-1]) == bounds.definition()
    url, body = bounds.management_request("http://rabbitmq:15672/", "/")
    assert url == f"http://rabbitmq:15672/api/policies/%2F/{POLICY_NAME}"
    assert json.loads(body)["apply-to"] == "queues"
    defaults = ParkingBounds.from_settings(Settings())
    assert (defaults.ttl_seconds, defaults.max_messages) == (14 * 86_400, 100_000)


@pytest.mark.parametrize(
    ("url", "vhost"),
    [
        ("amqp://guest:guest@127.0.0.1:5672/", "/"),
        ("amqp://guest:guest@127.0.0.1:5672", "/"),
        ("amqp://guest:guest@127.0.0.1:5672/%2F", "/"),
        ("amqp://u:p@rabbitmq/roac-test-e2e-1", "roac-test-e2e-1"),
    ],
)
def test_the_policy_goes_to_the_vhost_of_the_amqp_url(url: str, vhost: str) -> None:
    assert vhost_of(url) == vhost


@pytest.mark.parametrize(("language", "erasure_words"), [("en", "eras"), ("de", "lösch")])
def test_an_erased_persons_link_page_is_neutral_and_succeeds(
    language: str, erasure_words: str
) -> None:
    status, key = _RESULT[Outcome.ERASED]
    assert status == 200
    page = link_pages.render("page.html.j2", language, key).lower()
    assert "<h1" in page and erasure_words not in page
