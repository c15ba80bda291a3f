"""Issue 17's acceptance, live: for every secret setting, every process that reads it (`roac
ingest`, `matcher`, `notifier`, `console`; `roac migrate` for the management URL) refuses to
start with a placeholder, and with a low-entropy value where roac makes the value itself. Each
refusal exits 2 naming the setting and how to get a good value, and never prints the value.

The processes start from the e2e stacks' environment (real RabbitMQ vhost and PostgreSQL
database names, fresh strong secrets) with the settings it reads replaced, in parallel: a
refusing process exits in about a second, before it connects to anything, and names every
setting it refuses on a line of its own."""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from shared.secret_policy import KNOWN_PLACEHOLDERS
from tests.support.infra import AMQP_BASE, PG_BASE, Infra, isolated_infra
from tests.support.processes import run_roac

pytestmark = pytest.mark.e2e

GENERATE = "roac secrets generate"
# Refused for fewer than 12 distinct characters; 35 characters, so not for its length.
LOW_ENTROPY = "Tr0ub4dor&3Tr0ub4dor&3Tr0ub4dor&3xx"
# Slack's own format (32 hex digits), but a run no generator makes.
LOW_ENTROPY_HEX = "0123456789abcdef0123456789abcdef"
# The placeholders deploy/k8s ships (10-config.yaml, 30-rabbitmq.yaml): refused at start, so a
# deployer must replace them.
K8S_SMTP_PASSWORD = "replace-me"
K8S_RABBITMQ_PASSWORD = "change-me"

SERVICES = ("ingest", "matcher", "notifier")
ALL_FOUR = (*SERVICES, "console")


@dataclass(frozen=True)
class Refusal:
    """One setting given one refused value, and what its refusal must say."""

    variable: str
    value: str
    readers: tuple[str, ...]
    remedy: str  # part of the refusal's advice on getting a good value
    secret: str  # the part that must never be printed

    @property
    def label(self) -> str:
        return f"{self.variable}={self.secret!r}"


def _strong(variable: str, readers: tuple[str, ...], placeholder: str) -> list[Refusal]:
    """A secret roac makes: one published placeholder and a low-entropy value."""
    return [
        Refusal(variable, value, readers, GENERATE, value) for value in (placeholder, LOW_ENTROPY)
    ]


def _refusals(infra: Infra) -> list[Refusal]:
    database = infra.database_url.removeprefix(PG_BASE)
    vhost = infra.amqp_url.removeprefix(AMQP_BASE)
    placeholders = sorted(KNOWN_PLACEHOLDERS)
    keys_create = "roac keys create"
    return [
        *[
            Refusal("ROAC_LINK_KEYS", f"k1:{p}", ("notifier",), GENERATE, p)
            for p in [*placeholders, LOW_ENTROPY]
        ],
        *_strong("ROAC_SECRET_KEY", ("notifier",), placeholders[0]),
        *[
            Refusal("ROAC_API_KEYS", f"crm:{value}", SERVICES, GENERATE, value)
            for value in (placeholders[1], LOW_ENTROPY)
        ],
        *_strong("ROAC_WEBHOOK_SIGNING_KEY", ("notifier",), placeholders[2]),
        *_strong("ROAC_ERASURE_KEY", SERVICES, placeholders[3]),
        *_strong("ROAC_CONSOLE_SESSION_KEY", ("console",), placeholders[4]),
        *[
            Refusal(variable, value, (reader,), keys_create, value)
            for variable, reader in (
                ("ROAC_CONSOLE_API_KEY", "console"),
                ("ROAC_NOTIFIER_MATCHER_API_KEY", "notifier"),
            )
            for value in ("replace-with-a-key-from-roac-keys-create", LOW_ENTROPY)
        ],
        *[
            Refusal("ROAC_SLACK_SIGNING_SECRET", value, ("notifier",), "Signing Secret", value)
            for value in ("replace-with-the-slack-signing-secret", LOW_ENTROPY_HEX)
        ],
        # Chosen by their issuer: only a placeholder is refused.
        Refusal(
            "ROAC_SMTP_PASSWORD",
            K8S_SMTP_PASSWORD,
            ("notifier",),
            "mail provider",
            K8S_SMTP_PASSWORD,
        ),
        *[
            Refusal("ROAC_SLACK_BOT_TOKEN", value, ("notifier",), "OAuth", value)
            for value in ("xoxb-your-bot-token", "xoxb-xxxxxxxxxx-xxxxxxxxxx")
        ],
        Refusal("ROAC_MATRIX_ACCESS_TOKEN", "change-me", ("notifier",), "homeserver", "change-me"),
        Refusal(
            "ROAC_AMQP_URL",
            f"amqp://guest:{K8S_RABBITMQ_PASSWORD}@127.0.0.1:5672/{vhost}",
            SERVICES,
            GENERATE,
            K8S_RABBITMQ_PASSWORD,
        ),
        Refusal(
            "ROAC_DATABASE_URL",
            f"postgresql://postgres:replace-me@127.0.0.1:5432/{database}",
            ALL_FOUR,
            GENERATE,
            "replace-me",
        ),
        Refusal(
            "ROAC_RABBITMQ_MANAGEMENT_URL",
            f"http://guest:{K8S_RABBITMQ_PASSWORD}@127.0.0.1:15672",
            ("migrate",),
            GENERATE,
            K8S_RABBITMQ_PASSWORD,
        ),
    ]


@pytest.fixture(scope="module")
def infra() -> Iterator[Infra]:
    with isolated_infra("refusals") as created:
        yield created


def _runs(refusals: list[Refusal]) -> list[tuple[str, list[Refusal]]]:
    """Each process with its settings' refused values: the first value of each setting it
    reads in one run, the second in the next, and so on. A process reports every setting it
    refuses, one line each, so one run checks them all."""
    runs: list[tuple[str, list[Refusal]]] = []
    for process in sorted({p for refusal in refusals for p in refusal.readers}):
        by_setting: dict[str, list[Refusal]] = {}
        for refusal in refusals:
            if process in refusal.readers:
                by_setting.setdefault(refusal.variable, []).append(refusal)
        for index in range(max(len(values) for values in by_setting.values())):
            runs.append(
                (process, [values[index] for values in by_setting.values() if index < len(values)])
            )
    return runs


def _why_not_refused(env: dict[str, str], process: str, refused: list[Refusal]) -> list[str]:
    """What `roac PROCESS` did wrong given `refused`: nothing when it exited 2 and each
    setting's line says it is refused and how to get a good value, printing no value."""
    started = run_roac({**env, **{r.variable: r.value for r in refused}}, process)
    said = started.stdout + started.stderr
    if started.returncode != 2:
        return [f"roac {process}: exit {started.returncode}, not 2: {said[-600:]}"]
    lines = {
        line.split(":", 2)[1].strip(): line
        for line in started.stderr.splitlines()
        if line.startswith("configuration error: ")
    }
    wrong = []
    for refusal in refused:
        line = lines.get(refusal.variable, "")
        if "is refused" not in line or refusal.remedy not in line:
            wrong.append(f"roac {process} with {refusal.label}: {line or 'not refused'}")
        if refusal.secret in said or refusal.value in said:
            wrong.append(f"roac {process} with {refusal.label}: the refused value is printed")
    return wrong


def test_every_secret_setting_refuses_a_placeholder_or_low_entropy_value_in_each_reader(
    infra: Infra,
) -> None:
    env = infra.env()
    infra.settings()  # the environment itself is valid: each refusal is of a replaced value
    refusals = _refusals(infra)
    runs = _runs(refusals)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        outcomes = pool.map(lambda run: _why_not_refused(env, *run), runs)
        failures = [failure for outcome in outcomes for failure in outcome]
    assert not failures, "\n".join(failures)
    # Every refusal was tried in each of its readers, every secret setting and every process.
    tried = {(process, id(r)) for process, refused in runs for r in refused}
    assert tried == {(process, id(r)) for r in refusals for process in r.readers}
    assert {refusal.variable for refusal in refusals} >= {
        "ROAC_LINK_KEYS",
        "ROAC_SECRET_KEY",
        "ROAC_API_KEYS",
        "ROAC_WEBHOOK_SIGNING_KEY",
        "ROAC_ERASURE_KEY",
        "ROAC_CONSOLE_SESSION_KEY",
        "ROAC_CONSOLE_API_KEY",
        "ROAC_NOTIFIER_MATCHER_API_KEY",
        "ROAC_SLACK_SIGNING_SECRET",
        "ROAC_SMTP_PASSWORD",
        "ROAC_SLACK_BOT_TOKEN",
        "ROAC_MATRIX_ACCESS_TOKEN",
        "ROAC_AMQP_URL",
        "ROAC_DATABASE_URL",
    }
    assert {process for process, _ in runs} == {*ALL_FOUR, "migrate"}


def test_the_development_defaults_and_provider_tokens_are_not_placeholders(
    infra: Infra,
) -> None:
    """guest:guest in ROAC_AMQP_URL and a password-less PostgreSQL (`roac up`, `make run`, the
    tests) pass the check that refuses `change-me`, as do tokens of a provider's shape: a
    command that reads the settings (`roac webhooks secret URL`) runs."""
    env = infra.env(
        ROAC_AMQP_URL="amqp://guest:guest@127.0.0.1:5672/",
        ROAC_DATABASE_URL="postgresql://postgres@127.0.0.1:5432/roac",
        ROAC_SMTP_PASSWORD="guest",
        ROAC_SLACK_BOT_TOKEN="xoxb-1234567890-0987654321-AbCdEfGhIjKlMnOpQrStUvWx",
        ROAC_MATRIX_ACCESS_TOKEN="syt_cm9hYw_ZmQ4YjM1NTk0NzE2_0Hq1Tc",
    )
    printed = run_roac(env, "webhooks", "secret", "https://hooks.example.org/roac")
    assert printed.returncode == 0, printed.stderr[-2000:]
    assert printed.stdout.startswith("whsec_")
