"""The matcher's port is named for its API (ROAC_MATCHER_PORT); the old name still works, with a
deprecation line in the log when it is the one set."""

from __future__ import annotations

import logging

import pytest

from services.matcher.app import warn_deprecated_port
from shared.settings import Settings


@pytest.mark.parametrize(
    ("environ", "port", "deprecated"),
    [
        ({}, 9101, False),
        ({"ROAC_MATCHER_PORT": "9201"}, 9201, False),
        ({"ROAC_MATCHER_METRICS_PORT": "9301"}, 9301, True),
        ({"ROAC_MATCHER_PORT": "9201", "ROAC_MATCHER_METRICS_PORT": "9301"}, 9201, False),
    ],
)
def test_the_new_name_wins_and_the_old_one_is_still_read(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    environ: dict[str, str],
    port: int,
    deprecated: bool,
) -> None:
    for name in ("ROAC_MATCHER_PORT", "ROAC_MATCHER_METRICS_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.matcher_port == port
    assert settings.matcher_metrics_port == port  # the old attribute, for existing callers
    with caplog.at_level(logging.WARNING, logger="roac.matcher"):
        assert warn_deprecated_port(environ) is deprecated
    assert ("ROAC_MATCHER_METRICS_PORT is deprecated" in caplog.text) is deprecated


def test_the_port_can_be_given_by_name() -> None:
    assert Settings(matcher_port=9401).matcher_port == 9401
