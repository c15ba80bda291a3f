import pytest

from shared.secret_policy import new_secret
from shared.settings import Settings, parse_api_keys

STRONG = new_secret()


def test_defaults_match_the_documented_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("ROAC_"):
            monkeypatch.delenv(key)
    s = Settings()
    assert s.amqp_url == "amqp://guest:guest@127.0.0.1:5672/"
    assert s.database_url == "postgresql://postgres@127.0.0.1:5432/roac"
    assert (s.ingest_host, s.ingest_port) == ("127.0.0.1", 8000)
    assert (s.matcher_metrics_port, s.notifier_metrics_port) == (9101, 9102)
    assert (s.notifier_public_port, s.public_url) == (9103, "http://127.0.0.1:9103")
    assert s.intro_mode == "double_opt_in"
    assert s.api_key_secrets == {}


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    crm, forms = new_secret(), new_secret()
    monkeypatch.setenv("ROAC_INGEST_PORT", "8123")
    monkeypatch.setenv("ROAC_API_KEYS", f"crm:{crm}, forms:{forms}")
    s = Settings()
    assert s.ingest_port == 8123
    assert s.api_key_secrets == {"crm": crm, "forms": forms}
    assert crm not in repr(s)  # secrets stay out of reprs and logs


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("nocolon", "name:secret"),
        ("crm:short", "shorter than 32"),
        (f"crm:{STRONG},crm:{STRONG}", "twice"),
        ("bad name:0123456789abcdef", "name:secret"),
    ],
)
def test_malformed_api_keys_are_refused_with_a_reason(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_api_keys(raw)


def test_verified_sources_are_parsed_and_default_to_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROAC_IDENTITY_VERIFIED_SOURCES", raising=False)
    assert Settings().verified_sources == frozenset()
    monkeypatch.setenv("ROAC_IDENTITY_VERIFIED_SOURCES", " crm, sso ,,")
    assert Settings().verified_sources == {"crm", "sso"}
    monkeypatch.setenv("ROAC_IDENTITY_VERIFIED_SOURCES", "crm,Bad Name")
    with pytest.raises(ValueError, match="not a source name"):
        Settings()
