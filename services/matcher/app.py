"""Wiring of the matcher process: pool, broker, subscriber, outbox relay, the round worker, the
inbox pruning, and the HTTP routes (/v1/pools, /v1/rounds, /v1/resources, feedback, a person's
identities and merges, /metrics, /healthz, /readyz) on ROAC_MATCHER_PORT."""

import logging
import os
from collections.abc import Mapping
from datetime import timedelta

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from services.matcher import subscriptions
from services.matcher.clock import clock_from_setting
from services.matcher.constraints import Rules
from services.matcher.contacts_admin import ContactIdentities
from services.matcher.directory import Directory
from services.matcher.feedback import Feedback
from services.matcher.operator_routes import operator_api
from services.matcher.pair_blocks import PairBlocks
from services.matcher.resources import Resources
from services.matcher.rounds import RoundPolicy, Rounds
from services.matcher.routes import api
from services.matcher.service import MatcherService, MatchingPolicy
from services.matcher.store import MatcherStore
from services.matcher.store.erasure import CONSUMER
from shared import problems
from shared.api_keys import ApiKeyMiddleware, ApiKeyring
from shared.authorization import Forbidden, forbidden_problem
from shared.body_limit import BodySizeLimitMiddleware
from shared.broker import EventPublisher, make_broker
from shared.consumer import TRANSIENT_ERRORS
from shared.inbox import InboxPruner
from shared.logs import configure_logging
from shared.metrics import watch_pool
from shared.outbox import OutboxRelay
from shared.parking import ParkingBounds, export_limits
from shared.runtime import consumer_app, open_pool, serve
from shared.settings import Settings

API_BODY_LIMIT_BYTES = 64 * 1024
log = logging.getLogger("roac.matcher")


async def build(settings: Settings) -> FastAPI:
    if settings.erasure_key_bytes is None:
        raise SystemExit(
            "ROAC_ERASURE_KEY must be set: erased people are remembered only by an HMAC under "
            "it. `roac secrets generate` makes one; `roac up` generates one for development."
        )
    # Two connections beyond the consumers' share: the round worker and the HTTP API.
    pool = await open_pool(settings, max_size=settings.database_pool_size + 2)
    watch_pool("matcher", pool)
    broker = make_broker(settings, service="matcher", prefetch=settings.consumer_prefetch)
    store = MatcherStore(pool, erasure_key=settings.erasure_key_bytes)
    # The parking queues' bounds, beside RabbitMQ's depths (the alert before they fill).
    export_limits(ParkingBounds.from_settings(settings))
    policy = MatchingPolicy(
        min_score=settings.match_min_score,
        candidates_per_topic=settings.match_candidates_per_topic,
        rules=Rules(cap_per_week=settings.match_cap_per_week),
        cooldown_days=settings.match_repeat_cooldown_days,
        half_life_days=settings.match_interest_half_life_days,
        group_max=settings.match_group_max,
        verified_sources=settings.verified_sources,
    )
    # The system's, or one a test moves (ROAC_CLOCK_OFFSET_FILE, tests only).
    clock = clock_from_setting(settings.clock_offset_file)
    subscriptions.register(broker, MatcherService(store, policy, clock))
    rounds = Rounds(
        store,
        RoundPolicy(
            top_k=settings.round_top_k,
            per_topic=settings.round_candidates_per_topic,
            cap_per_week=settings.match_cap_per_week,
            cooldown_days=settings.match_repeat_cooldown_days,
            half_life_days=settings.match_interest_half_life_days,
            poll_seconds=settings.round_poll_seconds,
        ),
        clock,
    )
    relay = OutboxRelay(
        pool, EventPublisher(broker, "matcher"), CONSUMER, database_url=settings.database_url
    )
    # The matcher deduplicates through messaging.inbox: its rows go after the window.
    inbox_pruner = InboxPruner(
        pool,
        CONSUMER,
        retention=timedelta(days=settings.inbox_retention_days),
        interval=settings.inbox_prune_seconds,
    )
    app = consumer_app(
        title="roac matcher",
        amqp_url=settings.amqp_url,
        database_url=settings.database_url,
        broker=broker,
        pool=pool,
        relay=relay,
        background=[rounds.run_forever, inbox_pruner.run_forever],
        routers=[api, operator_api],
        shutdown_seconds=settings.shutdown_timeout_seconds,
    )
    app.state.rounds = rounds
    app.state.feedback = Feedback(store)
    app.state.contacts = ContactIdentities(store)
    app.state.pair_blocks = PairBlocks(store)
    app.state.directory = Directory(pool)
    app.state.resources = Resources(
        store,
        cap_per_week=settings.resource_cap_per_week,
        half_life_days=settings.match_interest_half_life_days,
    )
    app.add_exception_handler(RequestValidationError, problems.validation_problem)
    app.add_exception_handler(HTTPException, problems.http_problem)
    app.add_exception_handler(Forbidden, forbidden_problem)
    problems.answer_unavailable(app, TRANSIENT_ERRORS)  # database down: 503, never 500
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=API_BODY_LIMIT_BYTES)
    app.add_middleware(ApiKeyMiddleware, keyring=ApiKeyring.from_settings(settings))
    return app


async def run(settings: Settings) -> None:
    configure_logging(settings.log_level, settings.log_format)
    warn_deprecated_port(os.environ)
    app = await build(settings)
    await serve(app, host=settings.metrics_host, port=settings.matcher_port)


def warn_deprecated_port(environ: Mapping[str, str]) -> bool:
    """Log a deprecation line when the port comes from its old name; True when it did."""
    names = {name.upper() for name in environ}
    if "ROAC_MATCHER_METRICS_PORT" in names and "ROAC_MATCHER_PORT" not in names:
        log.warning(
            "ROAC_MATCHER_METRICS_PORT is deprecated: set ROAC_MATCHER_PORT, the port of the "
            "matcher's API, /metrics and health checks (the old name is still read)"
        )
        return True
    return False
