"""Metrics every roac service exposes, with Prometheus naming and low-cardinality labels only.

Labels name a service, a queue, an event type, a channel or an outcome; never a person.
Service-specific metrics live beside the service (`services/*/metrics.py`).
"""

import platform
from collections.abc import Iterator
from typing import Protocol

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from shared.version import roac_version

# Buckets around the latency objectives: handling a message well under 100 ms, an event
# reaching its consumer within a second, an introduction delivered within 10 s.
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

EVENTS_PUBLISHED = Counter(
    "roac_events_published_total",
    "Events published to RabbitMQ and confirmed by it.",
    ["service", "type"],
)
MESSAGES_HANDLED = Counter(
    "roac_messages_handled_total",
    "AMQP messages a consumer finished with, by outcome (acked, rejected to the dead-letter "
    "queue, or requeued after a transient failure).",
    ["service", "queue", "outcome"],
)
EVENTS_CONSUMED = Counter(
    "roac_events_consumed_total",
    "Events a consumer took in, by type and outcome (processed, or duplicate and skipped).",
    ["service", "type", "outcome"],
)
MESSAGE_HANDLING_SECONDS = Histogram(
    "roac_message_handling_seconds",
    "Time from a message's arrival at the handler to its acknowledgement.",
    ["service", "queue"],
    buckets=LATENCY_BUCKETS,
)
EVENT_AGE_SECONDS = Histogram(
    "roac_event_age_seconds",
    "Age of an event (now minus occurred_at) when its consumer finished with it.",
    ["service", "type"],
    buckets=LATENCY_BUCKETS,
)
OUTBOX_PUBLISHED = Counter(
    "roac_outbox_published_total",
    "Outbox rows published and removed.",
    ["service"],
)
OUTBOX_RELAY_FAILURES = Counter(
    "roac_outbox_relay_failures_total",
    "Outbox relay passes that failed and will be retried.",
    ["service"],
)
OUTBOX_DELAY_SECONDS = Histogram(
    "roac_outbox_delay_seconds",
    "Time an outbox row waited between its commit and its confirmed publish.",
    ["service"],
    buckets=LATENCY_BUCKETS,
)

INBOX_PRUNED = Counter(
    "roac_inbox_pruned_total",
    "Inbox rows (events a consumer applied) deleted once older than the deduplication window "
    "(ROAC_INBOX_RETENTION_DAYS).",
    ["consumer"],
)
INBOX_PRUNE_FAILURES = Counter(
    "roac_inbox_prune_failures_total",
    "Inbox prune passes that failed (the database unreachable) and will be retried.",
    ["consumer"],
)
PARKING_LIMIT = Gauge(
    "roac_parking_queue_limit",
    "The bound of each parking queue (roac.*.dlq) as configured (ROAC_PARKING_MAX_MESSAGES, "
    "ROAC_PARKING_MAX_BYTES): beyond it RabbitMQ drops the oldest parked message. Compare with "
    "rabbitmq_detailed_queue_messages and _messages_bytes.",
    ["queue", "unit"],
)

BUILD_INFO = Info(
    "roac_build",
    "The roac release and Python this process runs (as roac_build_info, always 1): which "
    "version each process is on during a rolling upgrade.",
)
BUILD_INFO.info({"version": roac_version(), "python": platform.python_version()})

API_KEY_REQUESTS = Counter(
    "roac_api_key_requests_total",
    "Authenticated /v1/ requests by API key name (names are chosen by the operator, a handful "
    "per deployment; never a secret).",
    ["key"],
)
API_KEY_REFUSALS = Counter(
    "roac_api_key_refusals_total",
    "Requests refused with 403 by API key name and the scope they lacked.",
    ["key", "scope"],
)
API_KEYS_LOADED = Gauge(
    "roac_api_keys_loaded_timestamp_seconds",
    "When this process last loaded the database's API keys (Unix time). Falling behind by more "
    "than ROAC_API_KEYS_REFRESH_SECONDS means revoked or new keys are not seen.",
)


class SizedPool(Protocol):
    def get_size(self) -> int: ...

    def get_idle_size(self) -> int: ...

    def get_max_size(self) -> int: ...


class PoolCollector(Collector):
    """PostgreSQL pool saturation, read at scrape time: connections open, in use, and the
    maximum. In use at the maximum for long means handlers queue for connections."""

    def __init__(self, service: str, pool: SizedPool) -> None:
        self._service = service
        self._pool = pool

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "roac_db_pool_connections",
            "PostgreSQL pool connections by state: open (idle or in use), in_use.",
            labels=["service", "state"],
        )
        size = self._pool.get_size()
        family.add_metric([self._service, "open"], size)
        family.add_metric([self._service, "in_use"], size - self._pool.get_idle_size())
        yield family
        # A series of its own: as a third state, sum() over the states would add it in.
        maximum = GaugeMetricFamily(
            "roac_db_pool_max_connections",
            "The most connections the PostgreSQL pool opens.",
            labels=["service"],
        )
        maximum.add_metric([self._service], self._pool.get_max_size())
        yield maximum


_watched: dict[str, PoolCollector] = {}


def watch_pool(service: str, pool: SizedPool) -> None:
    """Expose the pool's saturation (replacing an earlier pool of the same service)."""
    if service in _watched:
        REGISTRY.unregister(_watched[service])
    _watched[service] = PoolCollector(service, pool)
    REGISTRY.register(_watched[service])
