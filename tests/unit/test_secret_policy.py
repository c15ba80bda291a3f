"""Which secrets the services accept: placeholders and low-entropy values are refused by name."""

import pytest
from pydantic import ValidationError

from shared.secret_policy import (
    KNOWN_PLACEHOLDERS,
    new_secret,
    placeholder_reason,
    require_strong,
    url_password_placeholder,
    weakness,
)
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


@pytest.mark.parametrize(
    "value",
    [
        "replace-me",
        "change-me",
        "CHANGEME",
        "xoxb-your-bot-token",
        "xoxb-xxxxxxxxxx-xxxxxxxxxx",
        "syt_...",
        "<your SMTP password>",
        "password",
        *sorted(KNOWN_PLACEHOLDERS),
    ],
)
def test_placeholders_of_values_roac_does_not_choose_are_recognised(value: str) -> None:
    assert placeholder_reason(value) is not None


@pytest.mark.parametrize(
    "value",
    ["guest", "hunter2", "xoxb-test-token", "syt_test_token", "xoxb-1234-5678-AbCdEfGhIjKlMnOp"],
)
def test_real_looking_provider_values_and_the_dev_password_are_not_placeholders(
    value: str,
) -> None:
    assert placeholder_reason(value) is None


def test_only_a_placeholder_password_in_a_url_is_refused() -> None:
    assert url_password_placeholder("amqp://guest:guest@127.0.0.1:5672/") is None
    assert url_password_placeholder("postgresql://postgres@127.0.0.1:5432/roac") is None
    assert url_password_placeholder("amqp://roac:change-me@rabbitmq:5672/") is not None
    assert url_password_placeholder("postgresql://roac@pg/roac?password=replace-me") is not None
    assert url_password_placeholder("amqp://roac:%63hange-me@rabbitmq/") is not None


def test_settings_refuse_placeholder_urls_provider_tokens_and_weak_service_keys() -> None:
    for field, value in [
        ("amqp_url", "amqp://roac:change-me@rabbitmq:5672/"),
        ("database_url", "postgresql://roac:replace-me@postgres:5432/roac"),
        ("smtp_password", "replace-me"),
        ("slack_bot_token", "xoxb-your-bot-token"),
        ("matrix_access_token", "change-me"),
        ("notifier_matcher_api_key", "notifier-preferences-key"),
        ("console_api_key", "Tr0ub4dor&3Tr0ub4dor&3Tr0ub4dor&3xx"),
    ]:
        with pytest.raises(ValidationError, match=f"ROAC_{field.upper()} is refused") as refused:
            Settings.model_validate({field: value})
        assert value not in str(refused.value.errors(include_input=False))
    Settings(smtp_password="guest", slack_bot_token="xoxb-test-token")


@pytest.mark.parametrize(
    "password",
    ["северныйветер", "パスワードです", "!@#$%^&*()_+", "doyoursecretshopping", "TurnYourKeyNow1"],
)
def test_a_real_password_in_any_script_or_of_symbols_is_no_placeholder(password: str) -> None:
    # Issued by someone else (SMTP, PostgreSQL): taken as it is, unless it is an example's.
    assert placeholder_reason(password) is None
