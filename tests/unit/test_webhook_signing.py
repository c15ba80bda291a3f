"""The generic webhook's signatures (services/notifier/channels/webhook_signing.py) checked
against the Standard Webhooks reference library, and each destination's secret against the
formula receivers and operators rely on (`roac webhooks secret URL`)."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook, WebhookVerificationError
from typer.testing import CliRunner

from services.cli import app
from services.notifier.channels.webhook_signing import (
    destination_key,
    destination_secret,
    normalise_destination,
    signed_headers,
)
from shared.secret_policy import new_secret

KEY = new_secret().encode()
URL = "https://hooks.example.org/roac?team=7"
BODY = b'{"version":1,"type":"roac.ask","text":"caf\xc3\xa9"}'


def test_the_secret_is_whsec_and_base64_of_the_documented_hmac() -> None:
    expected = hmac.new(
        KEY, b"roac-webhook-destination-v1.https://hooks.example.org/roac?team=7", hashlib.sha256
    ).digest()
    secret = destination_secret(KEY, URL)
    assert secret == "whsec_" + base64.b64encode(expected).decode()
    assert destination_key(KEY, URL) == expected


def test_the_reference_library_verifies_what_roac_signs() -> None:
    now = int(datetime.now(UTC).timestamp())
    headers = signed_headers(destination_key(KEY, URL), "d0c5.0", now, BODY)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature"}
    assert headers["webhook-id"] == "d0c5.0" and headers["webhook-timestamp"] == str(now)
    webhook = Webhook(destination_secret(KEY, URL))
    assert webhook.verify(BODY, headers)["text"] == "café"
    # And roac's signature is byte for byte the library's.
    assert headers["webhook-signature"] == webhook.sign(
        "d0c5.0", datetime.fromtimestamp(now, UTC), BODY
    )
    with pytest.raises(WebhookVerificationError):
        webhook.verify(BODY + b" ", headers)
    with pytest.raises(WebhookVerificationError):  # another destination's secret
        Webhook(destination_secret(KEY, "https://hooks.example.org/other")).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):  # another server key
        Webhook(destination_secret(new_secret().encode(), URL)).verify(BODY, headers)


def test_destinations_are_normalised_before_deriving() -> None:
    same = [
        "https://hooks.example.org/roac?team=7",
        "HTTPS://Hooks.Example.ORG:443/roac?team=7",
        "https://user:pw@hooks.example.org/roac?team=7#fragment",
        " https://hooks.example.org./roac?team=7 ",
    ]
    assert {normalise_destination(u) for u in same} == {URL}
    assert len({destination_secret(KEY, u) for u in same}) == 1
    different = [
        "https://hooks.example.org/roac?team=8",
        "https://hooks.example.org/ROAC?team=7",
        "https://hooks.example.org:8443/roac?team=7",
        "http://hooks.example.org/roac?team=7",
    ]
    assert len({destination_secret(KEY, u) for u in [URL, *different]}) == 5
    assert normalise_destination("https://[::1]:8443") == "https://[::1]:8443/"
    for bad in ("ftp://x.org/", "not a url", "https:///path", "https://x.org:99999/"):
        with pytest.raises(ValueError, match="not an absolute http"):
            destination_secret(KEY, bad)
    with pytest.raises(ValueError, match="ROAC_WEBHOOK_SIGNING_KEY"):
        destination_secret(b"", URL)


def test_roac_webhooks_secret_prints_the_destinations_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ROAC_WEBHOOK_SIGNING_KEY", KEY.decode())
    result = CliRunner().invoke(app, ["webhooks", "secret", URL])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == destination_secret(KEY, URL)
    assert CliRunner().invoke(app, ["webhooks", "secret", "ftp://x.org/"]).exit_code == 2
    monkeypatch.setenv("ROAC_WEBHOOK_SIGNING_KEY", "")
    unset = CliRunner().invoke(app, ["webhooks", "secret", URL])
    assert unset.exit_code == 2 and "ROAC_WEBHOOK_SIGNING_KEY" in unset.output
