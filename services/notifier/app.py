"""Wiring of the notifier process: pool, broker, channels, the two subscribers (proposals of
introductions and resources, and delivery jobs), the outbox relay, the expiry sweep, the
reconciliation of deliveries a crash left in flight, and two HTTP listeners: the operations
port (ROAC_NOTIFIER_METRICS_PORT: /v1/intros, /v1/resources/deliveries, /metrics, /docs,
/healthz, /readyz) and the public port (ROAC_NOTIFIER_PUBLIC_PORT: the link pages people
click and their preferences pages, /healthz, nothing else), so exposing the links to the
internet exposes no metrics, no documentation and no operator API."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from services.notifier import link_pages, subscriptions
from services.notifier.activity import Activity
from services.notifier.answers import Answers
from services.notifier.channel_registry import build_channels, http_session
from services.notifier.checkin_service import CheckIns
from services.notifier.clock import Clock, clock_from_setting
from services.notifier.deliveries import DeliveryWorker, RetryPolicy
from services.notifier.in_flight import UnkeyedPolicy
from services.notifier.link_pages import PageLanguages, PageTemplates
from services.notifier.links import LinkKeyring, LinkMaker
from services.notifier.people import PeopleRequests
from services.notifier.planning import QuietHours
from services.notifier.preference_changes import PreferenceChanges
from services.notifier.preferences_held import MatcherReadBack
from services.notifier.preferences_routes import router as preferences_router
from services.notifier.proposals import ProposalIntake
from services.notifier.rate_limit import RateLimiter
from services.notifier.rendering import MessageRenderer
from services.notifier.resources import ResourceIntake
from services.notifier.routes import api, links
from services.notifier.slack_routes import SlackButtons, SlackResponder, slack
from services.notifier.smtp import SmtpSender
from services.notifier.store.outbox import PRODUCER
from services.notifier.store.uow import NotifierStore
from shared import problems
from shared.api_keys import ApiKeyMiddleware, ApiKeyring
from shared.authorization import Forbidden, forbidden_problem
from shared.body_limit import BodySizeLimitMiddleware
from shared.broker import EventPublisher, make_broker
from shared.consumer import TRANSIENT_ERRORS
from shared.http_app import http_app
from shared.logs import configure_logging
from shared.metrics import watch_pool
from shared.outbox import OutboxRelay
from shared.parking import ParkingBounds, export_limits
from shared.runtime import consumer_app, open_pool, serve
from shared.settings import Settings

PUBLIC_BODY_LIMIT_BYTES = 16 * 1024


async def build(settings: Settings, clock: Clock | None = None) -> FastAPI:
    if not settings.link_keyring:
        raise SystemExit(
            "ROAC_LINK_KEYS must be set: it signs the links in every message. "
            "`roac secrets generate` makes one; `roac up` generates one for development."
        )
    keyring = LinkKeyring([(key_id, secret.encode()) for key_id, secret in settings.link_keyring])
    if settings.erasure_key_bytes is None:
        raise SystemExit(
            "ROAC_ERASURE_KEY must be set: erased people are remembered only by an HMAC under "
            "it. `roac secrets generate` makes one; `roac up` generates one for development."
        )
    clock = clock or clock_from_setting(settings.clock_offset_file)
    pool = await open_pool(
        settings, max_size=settings.database_pool_size + settings.consumer_prefetch
    )
    watch_pool("notifier", pool)
    store = NotifierStore(pool, erasure_key=settings.erasure_key_bytes)
    # The parking queues' bounds, beside RabbitMQ's depths (the alert before they fill).
    export_limits(ParkingBounds.from_settings(settings))
    broker = make_broker(settings, service="notifier", prefetch=settings.consumer_prefetch)
    quiet = QuietHours(
        enabled=settings.quiet_hours_enabled,
        start=settings.quiet_hours_start,
        end=settings.quiet_hours_end,
        fallback_timezone=settings.default_timezone,
    )
    ask_ttl = timedelta(seconds=settings.ask_ttl_seconds)
    smtp = SmtpSender(settings)
    session = http_session(settings)
    renderer = MessageRenderer(
        Path(settings.template_dir) if settings.template_dir else None, settings.default_language
    )
    worker = DeliveryWorker(
        store,
        build_channels(settings, session, smtp),
        renderer,
        LinkMaker(settings.public_url, keyring),
        retry=RetryPolicy(
            settings.delivery_max_attempts,
            settings.retry_base_seconds,
            settings.retry_max_delay_seconds,
        ),
        quiet=quiet,
        limiter=RateLimiter(settings.webhook_rate_per_second),
        clock=clock,
        rng=random.Random(),
        group_size=settings.delivery_group_size,
        in_flight_seconds=settings.delivery_in_flight_seconds,
        unkeyed=UnkeyedPolicy(settings.delivery_unkeyed_reconcile),
    )
    proposals = ProposalIntake(
        store,
        double_opt_in=settings.intro_mode == "double_opt_in",
        ask_ttl=ask_ttl,
        quiet=quiet,
        clock=clock,
        deliver=worker.deliver_now,
    )
    resources = ResourceIntake(store, quiet=quiet, clock=clock, deliver=worker.deliver_now)
    answers = Answers(store, keyring=keyring, ask_ttl=ask_ttl, quiet=quiet, clock=clock)
    # The preferences pages read a person's channels and interests back from the matcher.
    read_back = MatcherReadBack.from_settings(settings)
    preferences = PreferenceChanges(
        store,
        keyring=keyring,
        clock=clock,
        operator_cap=settings.match_cap_per_week,
        read_back=read_back,
    )
    subscriptions.register(
        broker, proposals, resources, worker, PeopleRequests(store, answers), preferences
    )
    relay = OutboxRelay(
        pool, EventPublisher(broker, "notifier"), PRODUCER, database_url=settings.database_url
    )

    async def expiry() -> None:
        await answers.run_expiry(settings.expiry_sweep_seconds)

    checkins = CheckIns(
        store,
        keyring=keyring,
        links=LinkMaker(settings.public_url, keyring),
        after=timedelta(seconds=settings.checkin_after_seconds),
        quiet=quiet,
        clock=clock,
    )

    async def checkin_sweep() -> None:
        # "Did you meet?": check-ins whose time came are sent, unanswered ones expire.
        await checkins.run(settings.expiry_sweep_seconds)

    async def reconciliation() -> None:
        # At start, then periodically: deliveries a crash left in flight.
        await worker.run_reconciliation()

    app = consumer_app(
        title="roac notifier",
        amqp_url=settings.amqp_url,
        database_url=settings.database_url,
        broker=broker,
        pool=pool,
        relay=relay,
        background=[expiry, reconciliation, checkin_sweep],
        routers=[api],
        on_close=[smtp.close, session.close, read_back.aclose],
        shutdown_seconds=settings.shutdown_timeout_seconds,
    )
    app.state.answers = answers
    app.state.store = store
    app.state.activity = Activity(pool, store)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=PUBLIC_BODY_LIMIT_BYTES)
    app.add_middleware(ApiKeyMiddleware, keyring=ApiKeyring.from_settings(settings))
    app.add_exception_handler(Forbidden, forbidden_problem)
    app.add_exception_handler(RequestValidationError, problems.validation_problem)
    app.add_exception_handler(HTTPException, problems.http_problem)
    problems.answer_unavailable(app, TRANSIENT_ERRORS)  # database down: 503, never 500
    slack_buttons = None
    if signing_secret := settings.slack_signing_secret.get_secret_value():
        # Slack's clicks on the asks' buttons (POST /slack/interactivity on the public port).
        slack_buttons = SlackButtons(
            signing_secret.encode(),
            answers,
            SlackResponder(session, settings.allowed_webhook_hosts),
            clock,
            checkins=checkins,  # "did you meet?" buttons too
        )
    app.state.public_app = public_app(answers, slack_buttons, preferences)
    app.state.public_app.state.checkins = checkins  # its links' pages: checkin_pages.py
    # Link pages in their person's language (services/notifier/link_pages.py), from the same
    # templates as the messages: the operator's ROAC_TEMPLATE_DIR first, their default language.
    link_pages.configure(
        PageTemplates(
            Path(settings.template_dir) if settings.template_dir else None,
            settings.default_language,
        )
    )
    app.state.public_app.state.page_languages = PageLanguages(store, keyring)
    return app


def public_app(
    answers: Answers,
    slack_buttons: SlackButtons | None = None,
    preferences: PreferenceChanges | None = None,
) -> FastAPI:
    """The pages people reach from their messages, Slack's interactivity requests (with
    ROAC_SLACK_SIGNING_SECRET), and a liveness check for the load balancer in front of them."""
    public = http_app(
        title="roac notifier (public pages)", docs_url=None, redoc_url=None, openapi_url=None
    )
    public.state.answers = answers
    public.include_router(links)
    if preferences is not None:
        public.state.preferences = preferences
        public.include_router(preferences_router)
    if slack_buttons is not None:
        public.state.slack_buttons = slack_buttons
        public.include_router(slack)

    @public.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    public.add_middleware(BodySizeLimitMiddleware, max_bytes=PUBLIC_BODY_LIMIT_BYTES)
    return public


async def run(settings: Settings) -> None:
    configure_logging(settings.log_level, settings.log_format)
    app = await build(settings)
    await serve(
        app,
        host=settings.metrics_host,
        port=settings.notifier_metrics_port,
        public=(app.state.public_app, settings.public_host, settings.notifier_public_port),
    )
