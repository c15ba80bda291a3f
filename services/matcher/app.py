"""Wiring of the matcher process: pool, broker, subscriber, outbox relay, ops endpoints."""

from services.matcher import handlers
from services.matcher.service import MatcherService, MatchingPolicy
from services.matcher.store import CONSUMER, MatcherStore
from shared.broker import EventPublisher, make_broker
from shared.logs import configure_logging
from shared.metrics import watch_pool
from shared.outbox import OutboxRelay
from shared.runtime import consumer_app, open_pool, serve
from shared.settings import Settings


async def run(settings: Settings) -> None:
    configure_logging(settings.log_level, settings.log_format)
    pool = await open_pool(settings)
    watch_pool("matcher", pool)
    broker = make_broker(settings, service="matcher", prefetch=settings.consumer_prefetch)
    policy = MatchingPolicy(
        min_score=settings.match_min_score,
        candidates_per_topic=settings.match_candidates_per_topic,
    )
    handlers.register(broker, MatcherService(MatcherStore(pool), policy))
    relay = OutboxRelay(
        pool, EventPublisher(broker, "matcher"), CONSUMER, database_url=settings.database_url
    )
    app = consumer_app(
        title="roac matcher",
        amqp_url=settings.amqp_url,
        database_url=settings.database_url,
        broker=broker,
        pool=pool,
        relay=relay,
    )
    await serve(app, host=settings.metrics_host, port=settings.matcher_metrics_port)
