"""Configuration for every roac process, read from `ROAC_*` environment variables."""

from __future__ import annotations

import re
from functools import cached_property
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.names import KEY_NAME, SOURCE_NAME
from shared.secret_policy import (
    require_not_placeholder,
    require_strong,
    slack_signing_secret_weakness,
    url_password_placeholder,
)

# How to get a good value, in each refusal of a setting roac does not generate with
# `roac secrets generate` (shared/secret_policy.py).
_API_KEY_REMEDY = {
    "ROAC_CONSOLE_API_KEY": "Create one with `roac keys create console --scope ...` (the "
    "scopes: docs/console.md).",
    "ROAC_NOTIFIER_MATCHER_API_KEY": "Create one with `roac keys create notifier-preferences "
    "--scope contacts:read --source '*'`.",
}
_PROVIDER_REMEDY = {
    "ROAC_SMTP_PASSWORD": "Set the SMTP login's own password, as the mail provider gave it.",
    "ROAC_SLACK_BOT_TOKEN": "Copy the Bot User OAuth Token (xoxb-...) from the Slack app's "
    "OAuth & Permissions page.",
    "ROAC_MATRIX_ACCESS_TOKEN": "Use the access token the homeserver gave the bot account's login.",
}


class Settings(BaseSettings):
    """Every setting, its default and its meaning; the README's configuration table mirrors it."""

    model_config = SettingsConfigDict(
        env_prefix="ROAC_", extra="ignore", frozen=True, populate_by_name=True
    )

    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    database_url: str = "postgresql://postgres@127.0.0.1:5432/roac"
    database_pool_size: int = Field(default=10, ge=1, le=200)

    ingest_host: str = "127.0.0.1"
    ingest_port: int = Field(default=8000, ge=0, le=65535)
    # The matcher's API (/v1/pools, /v1/rounds, /v1/resources, ...), /metrics and health checks.
    # Its old name, ROAC_MATCHER_METRICS_PORT, is still read when this one is not set (the
    # matcher logs a deprecation line then: services/matcher/app.py).
    matcher_port: int = Field(
        default=9101,
        ge=0,
        le=65535,
        validation_alias=AliasChoices("ROAC_MATCHER_PORT", "ROAC_MATCHER_METRICS_PORT"),
    )
    notifier_metrics_port: int = Field(default=9102, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    # The notifier's public pages (the links in messages) and nothing else: the one port to
    # expose to the internet. Metrics, docs and the /v1/ API stay on the metrics port.
    notifier_public_port: int = Field(default=9103, ge=0, le=65535)
    public_host: str = "127.0.0.1"

    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=1025, ge=1, le=65535)
    smtp_from: str = "roac introductions <introductions@roac.example.org>"
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_tls: bool = False
    smtp_timeout_seconds: float = Field(default=10.0, gt=0)
    smtp_pool_size: int = Field(default=4, ge=1, le=64)

    # `name:secret` pairs, comma-separated; parsed by `api_key_secrets`. Valid beside the keys
    # in the database (`roac keys create`).
    api_keys: SecretStr = SecretStr("")
    # How often each process reloads the database's API keys when no change was announced
    # (`roac keys` announces each change with NOTIFY, seen at once): the longest a revoked key
    # can keep working while the database is reachable.
    api_keys_refresh_seconds: float = Field(default=5.0, gt=0, le=300)
    # double_opt_in: each participant is asked first; direct: introduce at once.
    intro_mode: Literal["direct", "double_opt_in"] = "double_opt_in"
    # Where people's browsers reach the notifier's links (accept, decline, unsubscribe).
    public_url: str = "http://127.0.0.1:9103"
    # The link key ring: `id:secret` pairs, comma-separated, newest first. The first signs the
    # links in messages, every one verifies them (services/notifier/links.py); rotate by putting
    # a new key first and dropping the oldest once its links expired (a year for unsubscribe).
    # `roac secrets generate` makes one. The notifier refuses to start without it.
    link_keys: SecretStr = SecretStr("")
    # Deprecated: a single link key, used as key id "0" when ROAC_LINK_KEYS is unset.
    secret_key: SecretStr = SecretStr("")
    # Server key of the erasure tombstones: an erased person is remembered only as
    # HMAC-SHA256(this key, source NUL external_id) (shared/erasure.py), never by a digest
    # anyone could recompute from a guessed id. The matcher and the notifier refuse to start
    # without it; changing it makes earlier tombstones unrecognisable: keep it like the data.
    erasure_key: SecretStr = SecretStr("")
    ask_ttl_seconds: int = Field(default=72 * 3600, ge=1)
    expiry_sweep_seconds: float = Field(default=30.0, gt=0)
    # "Did you meet?": each participant is asked this long after their introduction was
    # delivered (a pool's `checkin_after_days` wins), and once more as long after a "not yet".
    checkin_after_seconds: int = Field(default=7 * 24 * 3600, ge=1)
    # Tests only: a file holding seconds added to the notifier's clock (services/notifier/
    # clock.py), so an end-to-end test moves time past a check-in's delay instead of waiting.
    clock_offset_file: str = ""

    # Delivery: attempts before a delivery is parked, the first retry delay (later ones triple,
    # up to the cap, with +-20% jitter: 5 s ... 10 min, eight attempts over about 30 minutes).
    delivery_max_attempts: int = Field(default=8, ge=1, le=50)
    # Deliveries attempted together: their in-flight records written in one statement before
    # any is sent, their results in one after (services/notifier/deliveries.py). Throughput
    # only: what a crash can cause is per message whatever the size.
    delivery_group_size: int = Field(default=16, ge=1, le=200)
    # A delivery recorded in flight (before its provider is called) and still so after this
    # long was orphaned by a crash and is reconciled (services/notifier/in_flight.py); sends
    # are cut off at half of it. What channels without an idempotency key (Slack, Mattermost,
    # Discord, Teams) get then: resend_once (at most one extra copy, counted in
    # roac_notifier_possible_duplicates_total) or hold (parked, never resent).
    delivery_in_flight_seconds: float = Field(default=60.0, ge=2, le=3600)
    delivery_unkeyed_reconcile: Literal["resend_once", "hold"] = "resend_once"
    retry_base_seconds: float = Field(default=5.0, gt=0)
    retry_max_delay_seconds: float = Field(default=600.0, gt=0)
    # Nothing is delivered to a person between these hours of their local time.
    quiet_hours_start: int = Field(default=21, ge=0, le=23)
    quiet_hours_end: int = Field(default=8, ge=0, le=23)
    quiet_hours_enabled: bool = True
    default_timezone: str = "UTC"
    # Messages per second per destination (a webhook URL, a Slack workspace); Discord also
    # follows its rate-limit headers.
    webhook_rate_per_second: float = Field(default=1.0, gt=0)
    # Hosts webhook channels may post to (`*.` matches subdomains): a contact's URL elsewhere is
    # refused rather than fetched, so contact data cannot make roac call internal services.
    webhook_allowed_hosts: str = (
        "hooks.slack.com,discord.com,discordapp.com,*.webhook.office.com,*.logic.azure.com,"
        "*.environment.api.powerplatform.com"
    )
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    # Server key from which each generic-webhook destination's own `whsec_` secret is derived
    # (Standard Webhooks; `roac webhooks secret URL` prints one). Never a link key: a receiver
    # holds only its own secret. Unset: generic webhooks fail permanently (nothing is unsigned).
    webhook_signing_key: SecretStr = SecretStr("")
    # Outbound HTTP (webhooks, Slack, Matrix): addresses in these CIDRs (comma-separated) may be
    # called although private/loopback/link-local (refused otherwise), and http:// is allowed.
    # For local fake providers and tests; leave both off in production.
    outbound_allow_private_networks: str = ""
    outbound_allow_http: bool = False
    slack_bot_token: SecretStr = SecretStr("")
    slack_api_url: str = "https://slack.com/api"
    # The Slack app's signing secret (Basic Information > App Credentials): set, asks in Slack
    # carry buttons and POST /slack/interactivity on the public port verifies Slack's requests.
    slack_signing_secret: SecretStr = SecretStr("")
    matrix_homeserver_url: str = ""
    matrix_access_token: SecretStr = SecretStr("")
    # Operator templates that override the shipped ones (same file names), per language.
    template_dir: str = ""
    default_language: str = "en"

    # AMQP ingress: a message whose user_id (checked by RabbitMQ) names an API key writes only
    # that key's sources; with this set, a message from a sender without such a key is parked.
    ingress_require_key: bool = False

    # Ingest limits: a request over them is refused before anything is published.
    ingest_max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    # Items per batch request: at most services/ingest/schemas.py's MAX_BATCH_ITEMS (1,000), a
    # limit of the API's schema (the OpenAPI document says it), not a setting.
    # Interests for one person (the same source and external_id) in one request: a batch
    # declaring more for someone is refused (or, with ?partial=true, the later ones are).
    ingest_max_interests_per_person: int = Field(default=100, ge=1, le=10_000)

    # Matching: a pair is proposed only at or above this score (see services/matcher/scoring.py).
    match_min_score: float = Field(default=1.0, ge=0)
    match_candidates_per_topic: int = Field(default=50, ge=1, le=10_000)
    # Constraints every introduction obeys, live or in a round (services/matcher/constraints.py).
    match_cap_per_week: int = Field(default=2, ge=1, le=100)
    # Days before the same group may be proposed again; unset means never.
    match_repeat_cooldown_days: int | None = Field(default=None, ge=1)
    # An interest's weight halves every this many days after it was declared.
    match_interest_half_life_days: float = Field(default=365.0, gt=0)
    # Up to this many people sharing a rare topic (and no history) meet as one group; 2: never.
    match_group_max: int = Field(default=6, ge=2, le=6)
    # Sources (comma-separated) that verify the emails and chat handles they send: identities of
    # two of them sharing one are merged into one person. Otherwise only identities of the same
    # source merge, so no integration can take over another's person (docs/matcher.md).
    identity_verified_sources: str = ""
    # Rounds: candidates kept per person in the sparse graph, and people sampled per topic.
    round_top_k: int = Field(default=10, ge=1, le=200)
    round_candidates_per_topic: int = Field(default=30, ge=1, le=10_000)
    round_poll_seconds: float = Field(default=1.0, gt=0)
    # Resources (POST /v1/resources): at most this many per person in any 7 days.
    resource_cap_per_week: int = Field(default=2, ge=1, le=100)

    # Consumers: AMQP messages handled concurrently per process (each may hold many events).
    consumer_prefetch: int = Field(default=32, ge=1, le=1000)
    # The deduplication window: inbox rows (messaging.inbox, which events a consumer applied)
    # older than this are pruned every ROAC_INBOX_PRUNE_SECONDS, in batches (shared/inbox.py).
    # An event redelivered or replayed later than this would be applied again: keep it longer
    # than ROAC_PARKING_TTL_DAYS (a parked message can be replayed until it expires).
    inbox_retention_days: float = Field(default=15.0, gt=0)
    inbox_prune_seconds: float = Field(default=300.0, gt=0)
    # Parking queues (roac.*.dlq): a parked message is dropped after this many days, and the
    # oldest first when a queue holds more than this many messages or bytes. Applied as the
    # RabbitMQ policy `roac-parking` by `roac migrate` (shared/parking.py, docs/operations.md).
    parking_ttl_days: float = Field(default=14.0, gt=0, le=365)
    parking_max_messages: int = Field(default=100_000, ge=1)
    parking_max_bytes: int = Field(default=512 * 1024 * 1024, ge=1024 * 1024)
    # RabbitMQ's management API (`http://rabbitmq:15672`), where `roac migrate` applies the
    # parking policy; unset, it uses `rabbitmqctl` when on PATH, or prints the command.
    rabbitmq_management_url: str = ""
    # How long `roac migrate` keeps trying the management API while it does not answer yet or
    # answers 5xx (RabbitMQ still starting next to it); a 4xx fails at once.
    rabbitmq_management_wait_seconds: float = Field(default=60.0, ge=0, le=600)
    # After SIGTERM (and 5 s for open HTTP requests): the longest a service takes to finish its
    # in-flight messages and close everything (shared/shutdown.py). Keep the sum below the
    # orchestrator's grace period (Kubernetes: 30 s; docker-compose.yml sets 30 s).
    shutdown_timeout_seconds: float = Field(default=20.0, ge=1, le=600)

    # The console (services/console/): operators' web pages, which act only through the three
    # services' APIs with ROAC_CONSOLE_API_KEY (scopes: docs/console.md). Its session cookies
    # are signed with ROAC_CONSOLE_SESSION_KEY; unset, the console refuses to start.
    console_host: str = "127.0.0.1"
    console_port: int = Field(default=8080, ge=0, le=65535)
    console_api_key: SecretStr = SecretStr("")
    console_session_key: SecretStr = SecretStr("")
    console_session_hours: float = Field(default=12.0, gt=0, le=24 * 30)
    # Mark the session cookie Secure: set it when the console is served over HTTPS.
    console_cookie_secure: bool = False
    # Where operators' browsers reach the console (the set-password links); default: host:port.
    console_url: str = ""
    # How often the console asks the matcher whether each person its audit list names is still
    # known, and replaces every mention of one erased through the API with "an erased person"
    # (services/console/erasure_sweep.py; at most 1,000 people a sweep, 20 questions a second).
    console_erasure_sweep_seconds: float = Field(default=600.0, gt=0)
    # Where the matcher's and the notifier's APIs are reached by the other services (ingest's
    # right-of-access answer gathers a person's record from both); default: this machine's
    # ROAC_MATCHER_PORT and ROAC_NOTIFIER_METRICS_PORT.
    matcher_url: str = ""
    notifier_url: str = ""
    # The notifier's preferences pages read each person's channels and interests back from the
    # matcher (GET /v1/contacts/{source}/{external_id} at ROAC_MATCHER_URL) with this key, one
    # with only the scope contacts:read on every source (`roac keys create notifier-preferences
    # --scope contacts:read --source '*'`). Unset, the pages show neither; the rest works.
    notifier_matcher_api_key: SecretStr = SecretStr("")
    # The APIs the console calls; default: ROAC_MATCHER_URL, ROAC_NOTIFIER_URL, this machine's
    # ROAC_INGEST_PORT.
    console_ingest_url: str = ""
    console_matcher_url: str = ""
    console_notifier_url: str = ""

    log_level: str = "INFO"
    log_format: Literal["console", "json"] = "console"

    mailcatcher_smtp_port: int = Field(default=1025, ge=1, le=65535)
    mailcatcher_http_port: int = Field(default=8025, ge=1, le=65535)

    @field_validator("api_keys")
    @classmethod
    def _api_keys_well_formed(cls, value: SecretStr) -> SecretStr:
        parse_api_keys(value.get_secret_value())
        return value

    @field_validator("link_keys")
    @classmethod
    def _link_keys_well_formed(cls, value: SecretStr) -> SecretStr:
        parse_link_keys(value.get_secret_value())
        return value

    @field_validator(
        "secret_key",
        "webhook_signing_key",
        "erasure_key",
        "console_session_key",
    )
    @classmethod
    def _secret_strong(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        if value.get_secret_value():
            require_strong(f"ROAC_{(info.field_name or '').upper()}", value.get_secret_value())
        return value

    @field_validator("console_api_key", "notifier_matcher_api_key")
    @classmethod
    def _api_key_strong(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        # API keys roac made (`roac keys create`) pass; what a human typed does not.
        if value.get_secret_value():
            setting = f"ROAC_{(info.field_name or '').upper()}"
            require_strong(setting, value.get_secret_value(), _API_KEY_REMEDY[setting])
        return value

    @field_validator("amqp_url", "database_url", "rabbitmq_management_url")
    @classmethod
    def _url_password_not_placeholder(cls, value: str, info: ValidationInfo) -> str:
        # Only a placeholder is refused: guest:guest and a password-less local PostgreSQL are
        # the development defaults (`roac up`, `make run`, the tests).
        if reason := url_password_placeholder(value):
            setting = f"ROAC_{(info.field_name or '').upper()}"
            raise ValueError(
                f"{setting} is refused: {reason}. Give that user a random password of its own "
                "(any value `roac secrets generate` prints will do) and put it in the URL."
            )
        return value

    @field_validator("smtp_password", "slack_bot_token", "matrix_access_token")
    @classmethod
    def _provider_secret_not_placeholder(
        cls, value: SecretStr | None, info: ValidationInfo
    ) -> SecretStr | None:
        # Their issuer chooses these, so only an example's placeholder is refused.
        if value is not None and value.get_secret_value():
            setting = f"ROAC_{(info.field_name or '').upper()}"
            require_not_placeholder(setting, value.get_secret_value(), _PROVIDER_REMEDY[setting])
        return value

    @field_validator("slack_signing_secret")
    @classmethod
    def _slack_signing_secret_strong(cls, value: SecretStr) -> SecretStr:
        # Slack's own 32 hex digits pass; what a human typed (a placeholder) does not.
        secret = value.get_secret_value()
        if secret and (reason := slack_signing_secret_weakness(secret)):
            raise ValueError(
                f"ROAC_SLACK_SIGNING_SECRET is refused: {reason}. Copy the Signing Secret from "
                "the Slack app's Basic Information page."
            )
        return value

    @cached_property
    def link_keyring(self) -> list[tuple[str, str]]:
        """The link keys as `(id, secret)`, newest first; empty when none is configured."""
        ring = parse_link_keys(self.link_keys.get_secret_value())
        if not ring and self.secret_key.get_secret_value():
            ring = [("0", self.secret_key.get_secret_value())]
        return ring

    @property
    def amqp_user(self) -> str:
        """roac's own RabbitMQ user (ROAC_AMQP_URL's; aio-pika's default is guest): what
        RabbitMQ checks a `user_id` roac sets against (a replayed ingress message)."""
        return unquote(urlsplit(self.amqp_url).username or "") or "guest"

    @property
    def matcher_metrics_port(self) -> int:
        """The old name of `matcher_port`."""
        return self.matcher_port

    @cached_property
    def erasure_key_bytes(self) -> bytes | None:
        """ROAC_ERASURE_KEY as the HMAC key of the erasure tombstones; None when unset."""
        return self.erasure_key.get_secret_value().encode() or None

    @cached_property
    def console_base_url(self) -> str:
        """ROAC_CONSOLE_URL, or the console's own host and port."""
        return (self.console_url or f"http://{self.console_host}:{self.console_port}").rstrip("/")

    @cached_property
    def console_api_urls(self) -> dict[str, str]:
        """The base URLs of the APIs the console calls, by service."""
        return {
            "ingest": self.console_ingest_url or f"http://127.0.0.1:{self.ingest_port}",
            "matcher": self.console_matcher_url or self.service_api_urls["matcher"],
            "notifier": self.console_notifier_url or self.service_api_urls["notifier"],
        }

    @cached_property
    def service_api_urls(self) -> dict[str, str]:
        """The base URLs of the matcher's and the notifier's APIs, for the services that call
        them."""
        return {
            "matcher": (self.matcher_url or f"http://127.0.0.1:{self.matcher_port}").rstrip("/"),
            "notifier": (
                self.notifier_url or f"http://127.0.0.1:{self.notifier_metrics_port}"
            ).rstrip("/"),
        }

    @cached_property
    def allowed_webhook_hosts(self) -> tuple[str, ...]:
        return tuple(h.strip().lower() for h in self.webhook_allowed_hosts.split(",") if h.strip())

    @field_validator("outbound_allow_private_networks")
    @classmethod
    def _outbound_networks_well_formed(cls, value: str) -> str:
        parse_networks(value)
        return value

    @cached_property
    def outbound_allowed_networks(self) -> tuple[IPv4Network | IPv6Network, ...]:
        """ROAC_OUTBOUND_ALLOW_PRIVATE_NETWORKS parsed (services/notifier/outbound.py)."""
        return parse_networks(self.outbound_allow_private_networks)

    @cached_property
    def api_key_secrets(self) -> dict[str, str]:
        """The configured API keys as `{name: secret}`."""
        return parse_api_keys(self.api_keys.get_secret_value())

    @field_validator("identity_verified_sources")
    @classmethod
    def _verified_sources_well_formed(cls, value: str) -> str:
        parse_sources(value)
        return value

    @cached_property
    def verified_sources(self) -> frozenset[str]:
        """ROAC_IDENTITY_VERIFIED_SOURCES parsed (services/matcher/identity_keys.py)."""
        return parse_sources(self.identity_verified_sources)


def parse_sources(raw: str) -> frozenset[str]:
    """Parse `crm, forum` (source names as ingest accepts them); raise a readable ValueError."""
    names = frozenset(p.strip() for p in raw.split(",") if p.strip())
    for name in sorted(names):
        if not SOURCE_NAME.fullmatch(name):
            raise ValueError(f"ROAC_IDENTITY_VERIFIED_SOURCES: {name!r} is not a source name")
    return names


def parse_networks(raw: str) -> tuple[IPv4Network | IPv6Network, ...]:
    """Parse comma-separated CIDRs (`127.0.0.0/8,::1/128`); raise a readable ValueError."""
    try:
        return tuple(ip_network(p.strip()) for p in raw.split(",") if p.strip())
    except ValueError as exc:
        raise ValueError(f"ROAC_OUTBOUND_ALLOW_PRIVATE_NETWORKS: {exc}") from exc


def parse_api_keys(raw: str) -> dict[str, str]:
    """Parse `name:secret,name2:secret2`; raise a readable ValueError when malformed."""
    keys: dict[str, str] = {}
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        name, sep, secret = part.partition(":")
        if not sep or not KEY_NAME.fullmatch(name):
            raise ValueError(
                "ROAC_API_KEYS must be comma-separated name:secret pairs "
                "(name: letters, digits, '_', '.', '-')"
            )
        require_strong(f"the secret of API key {name!r} in ROAC_API_KEYS", secret)
        if name in keys:
            raise ValueError(f"API key name {name!r} appears twice in ROAC_API_KEYS")
        keys[name] = secret
    return keys


LINK_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


def parse_link_keys(raw: str) -> list[tuple[str, str]]:
    """Parse `id:secret,id2:secret2` (newest first); every secret must be strong."""
    ring: list[tuple[str, str]] = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        key_id, sep, secret = part.partition(":")
        if not sep or not LINK_KEY_ID.fullmatch(key_id):
            raise ValueError(
                "ROAC_LINK_KEYS must be comma-separated id:secret pairs, newest first "
                "(id: 1 to 32 letters, digits, '_' or '-'); `roac secrets generate` makes one"
            )
        if any(existing == key_id for existing, _ in ring):
            raise ValueError(f"link key id {key_id!r} appears twice in ROAC_LINK_KEYS")
        require_strong(f"link key {key_id!r} in ROAC_LINK_KEYS", secret)
        ring.append((key_id, secret))
    return ring
