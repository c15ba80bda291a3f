"""Which secrets the services accept: placeholders and low-entropy values are refused by name."""

import pytest
from pydantic import ValidationError

from shared.secret_policy import KNOWN_PLACEHOLDERS, new_secret, require_strong, weakness
from shared.settings import Settings, parse_link_keys


def test_generated_secrets_always_pass() -> None:
    assert all(weakness(new_secret()) is None for _ in range(2000))


@pytest.mark.parametrize("placeholder", sorted(KNOWN_PLACEHOLDERS))
def test_every_published_placeholder_is_refused(placeholder: str) -> None:
    assert weakness(placeholder) is not None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("Zq8-mK2pL0vN4xR7tY1wB5cD9fG3hJ6", "shorter than 32"),
        ("a" * 40, "distinct"),
        ("abcdefghijklmnopqrstuvwxyz0123456789ABCD", "run"),
        ("Tr0ub4dor&3Tr0ub4dor&3Tr0ub4dor&3xx", "distinct"),
        ("my-production-password-is-very-long-and-safe", "password"),
        ("please-change-this-before-going-live-thanks", "change"),
        ("kDx8Yz2QmP4wkDx8Yz2QmP4wkDx8Yz2QmP4wkDx8", "repeats"),
        ("aXaYaZaQaWaEaRaTaUaIaOaPaSaDaFaGa", "entropy"),
    ],
)
def test_weak_secrets_are_refused_with_a_reason(value: str, reason: str) -> None:
    found = weakness(value)
    assert found is not None
    assert reason in found


def test_the_refusal_names_the_setting_and_the_remedy() -> None:
    with pytest.raises(ValueError, match=r"ROAC_X is refused: .*roac secrets generate"):
        require_strong("ROAC_X", "changeme")


def test_settings_refuse_weak_link_keys_api_keys_and_secret_key() -> None:
    with pytest.raises(ValidationError, match="link key 'k1'"):
        Settings(link_keys="k1:replace-with-at-least-32-random-characters")
    with pytest.raises(ValidationError, match="API key 'crm'"):
        Settings(api_keys="crm:crm-secret-0123456789")
    with pytest.raises(ValidationError, match="ROAC_SECRET_KEY"):
        Settings(secret_key="compose-development-secret-change-me-0123456789")


def test_link_keys_parse_newest_first_and_fall_back_to_the_old_single_key() -> None:
    new, old = new_secret(), new_secret()
    assert Settings(link_keys=f"k2:{new},k1:{old}").link_keyring == [("k2", new), ("k1", old)]
    assert Settings(secret_key=old).link_keyring == [("0", old)]
    assert Settings().link_keyring == []
    with pytest.raises(ValueError, match="twice"):
        parse_link_keys(f"k1:{new},k1:{old}")
    with pytest.raises(ValueError, match="id:secret"):
        parse_link_keys(new)
