"""Parking queues bounded by age and size: the RabbitMQ policy `roac-parking`.

Parked messages (`roac.matcher.dlq`, `roac.notifier.dlq`, `roac.notifier.deliveries.dlq`,
`roac.ingest.ingress.dlq`) hold whole event batches: contacts with names and addresses. They
are kept for a look and a replay, not forever: a parked message is dropped after
ROAC_PARKING_TTL_DAYS (14), and once a queue holds more than ROAC_PARKING_MAX_MESSAGES
(100,000) messages or ROAC_PARKING_MAX_BYTES (512 MiB), its oldest message is dropped
(`overflow: drop-head`: the oldest is also the one that would expire first).

Why a policy and not queue arguments: a queue declared once cannot be redeclared with other
arguments (PRECONDITION_FAILED), so arguments would fail on every deployment whose parking
queues exist already, and again whenever a setting changes. A policy applies to existing and
new queues alike, and changes in place. Quorum queues take `message-ttl` (RabbitMQ 3.10 and
later), `max-length`, `max-length-bytes` and `overflow` from a policy.

`roac migrate` applies it (`apply_policy`): through RabbitMQ's management API when
ROAC_RABBITMQ_MANAGEMENT_URL is set, else with `rabbitmqctl` when it is on PATH (the broker's
own machine), else it prints the command for the operator. The shipped deployments
(docker-compose.yml, deploy/k8s) set the URL, and there a policy that cannot be set fails the
command (`policy_for_migrate`, exit 1) rather than look done while the parking queues stay
unbounded: compose starts the services only after a successful migrate, the Kubernetes Job is
retried. A development stack, or an operator who applies the policy by other means, leaves the
URL unset and is told what is left to do. RabbitMQ applies one policy per queue (the highest
priority): a deployment with its own policy matching these queues merges these keys into it
instead (docs/operations.md, Parked messages).
"""

from __future__ import annotations

import asyncio
import base64
import json
import shlex
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from shared.metrics import PARKING_LIMIT
from shared.settings import Settings
from shared.topology import CONSUMER_QUEUES, INGRESS_QUEUE

POLICY_NAME = "roac-parking"
# Every parking queue, and nothing else: roac.<consumer>.dlq.
POLICY_PATTERN = r"^roac\..+\.dlq$"
POLICY_PRIORITY = 10
PARKING_QUEUES: tuple[str, ...] = tuple(
    q.dead_letter_queue for q in (*CONSUMER_QUEUES, INGRESS_QUEUE)
)


@dataclass(frozen=True)
class ParkingBounds:
    ttl_seconds: float
    max_messages: int
    max_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ParkingBounds:
        return cls(
            ttl_seconds=settings.parking_ttl_days * 86_400,
            max_messages=settings.parking_max_messages,
            max_bytes=settings.parking_max_bytes,
        )

    def definition(self) -> dict[str, Any]:
        """The policy's definition (RabbitMQ's keys)."""
        return {
            "message-ttl": int(self.ttl_seconds * 1000),
            "max-length": self.max_messages,
            "max-length-bytes": self.max_bytes,
            "overflow": "drop-head",
        }

    def rabbitmqctl_args(self, vhost: str) -> list[str]:
        return [
            "rabbitmqctl",
            "set_policy",
            "-p",
            vhost,
            "--apply-to",
            "queues",
            "--priority",
            str(POLICY_PRIORITY),
            POLICY_NAME,
            POLICY_PATTERN,
            json.dumps(self.definition(), separators=(",", ":")),
        ]

    def management_request(self, base_url: str, vhost: str) -> tuple[str, bytes]:
        """The URL and body of the management API's PUT that sets the policy."""
        url = f"{base_url.rstrip('/')}/api/policies/{quote(vhost, safe='')}/{POLICY_NAME}"
        body = {
            "pattern": POLICY_PATTERN,
            "definition": self.definition(),
            "priority": POLICY_PRIORITY,
            "apply-to": "queues",
        }
        return url, json.dumps(body).encode()


def vhost_of(amqp_url: str) -> str:
    """The virtual host an AMQP URL names (`/` when it names none)."""
    path = urlsplit(amqp_url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def export_limits(bounds: ParkingBounds) -> None:
    """The configured bounds as gauges, for the alert that fires before a queue fills."""
    for queue in PARKING_QUEUES:
        PARKING_LIMIT.labels(queue, "messages").set(bounds.max_messages)
        PARKING_LIMIT.labels(queue, "bytes").set(bounds.max_bytes)


def _put_policy(settings: Settings, bounds: ParkingBounds, vhost: str) -> None:
    parts = urlsplit(settings.rabbitmq_management_url)
    amqp = urlsplit(settings.amqp_url)
    # Credentials in the management URL, else the AMQP URL's (urllib sends none by itself).
    user = unquote(parts.username or amqp.username or "guest")
    password = unquote(parts.password or amqp.password or "guest")
    host = f"{parts.hostname}:{parts.port}" if parts.port else f"{parts.hostname}"
    url, body = bounds.management_request(f"{parts.scheme}://{host}{parts.path}", vhost)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request = urllib.request.Request(  # noqa: S310 - the operator's own management URL
        url,
        data=body,
        method="PUT",
        headers={"Content-Type": "application/json", "Authorization": f"Basic {token}"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310
        if answer.status not in (200, 201, 204):
            raise RuntimeError(f"management API answered {answer.status}")


async def _put_policy_patiently(settings: Settings, bounds: ParkingBounds, vhost: str) -> None:
    """`_put_policy`, tried again with a growing pause while the management API does not answer
    or answers 5xx, for ROAC_RABBITMQ_MANAGEMENT_WAIT_SECONDS: docker-compose starts migrate
    once RabbitMQ takes AMQP connections, which can be before its HTTP API answers. A 4xx (bad
    credentials, no such vhost) is final at once."""
    deadline = time.monotonic() + settings.rabbitmq_management_wait_seconds
    pause = 0.5
    while True:
        try:
            await asyncio.to_thread(_put_policy, settings, bounds, vhost)
            return
        except urllib.error.HTTPError as exc:
            if exc.code < 500 or time.monotonic() + pause > deadline:
                raise
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if time.monotonic() + pause > deadline:
                raise
        await asyncio.sleep(pause)
        pause = min(pause * 2, 5.0)


async def _set_policy(settings: Settings, bounds: ParkingBounds, vhost: str) -> str | None:
    """Set the policy by the first means there is; what was done, or None when there is none.
    Raises when an attempt fails (a wrong management URL or credentials, RabbitMQ not up)."""
    if settings.rabbitmq_management_url:
        await _put_policy_patiently(settings, bounds, vhost)
        return f"parking policy {POLICY_NAME} set through the management API (vhost {vhost})"
    if shutil.which("rabbitmqctl"):
        await asyncio.to_thread(
            subprocess.run,
            bounds.rabbitmqctl_args(vhost),
            check=True,
            capture_output=True,
            timeout=120,
        )
        return f"parking policy {POLICY_NAME} set with rabbitmqctl (vhost {vhost})"
    return None


def _left_to_do(bounds: ParkingBounds, vhost: str) -> str:
    command = shlex.join(bounds.rabbitmqctl_args(vhost))
    return (
        "parking policy NOT applied (no ROAC_RABBITMQ_MANAGEMENT_URL, no rabbitmqctl): "
        f"parking queues keep messages forever until you run on the broker: {command}"
    )


async def apply_policy(settings: Settings) -> str:
    """Apply the parking policy to the settings' vhost; return what was done, for the operator.
    Raises when an attempt fails (a wrong management URL or credentials)."""
    bounds = ParkingBounds.from_settings(settings)
    vhost = vhost_of(settings.amqp_url)
    done = await _set_policy(settings, bounds, vhost)
    return done if done is not None else _left_to_do(bounds, vhost)


@dataclass(frozen=True)
class PolicyOutcome:
    """What `roac migrate` says about the policy, and whether the command fails on it."""

    report: str
    applied: bool
    # Asked for explicitly (ROAC_RABBITMQ_MANAGEMENT_URL): not applying it is a failure.
    required: bool

    @property
    def exit_code(self) -> int:
        return 1 if self.required and not self.applied else 0


async def policy_for_migrate(settings: Settings) -> PolicyOutcome:
    """Apply the policy for `roac migrate`. Never raises: a failed attempt is in the outcome,
    which fails the command only where the policy was asked for (the management URL set)."""
    bounds = ParkingBounds.from_settings(settings)
    vhost = vhost_of(settings.amqp_url)
    required = bool(settings.rabbitmq_management_url)
    try:
        done = await _set_policy(settings, bounds, vhost)
    except Exception as exc:  # noqa: BLE001 - the database is migrated: say what is left to do
        means = "the management API" if required else "rabbitmqctl"
        report = f"parking policy {POLICY_NAME} NOT applied through {means}: {exc!r}"
        return PolicyOutcome(f"{report} (docs/operations.md)", applied=False, required=required)
    if done is None:
        return PolicyOutcome(_left_to_do(bounds, vhost), applied=False, required=required)
    return PolicyOutcome(done, applied=True, required=required)
