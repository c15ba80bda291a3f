"""Wiring of the notifier process: pool, broker, SMTP, subscriber, outbox relay, ops endpoints."""

from services.notifier import handlers
from services.notifier.rendering import IntroRenderer
from services.notifier.service import NotifierService
from services.notifier.smtp import SmtpSender
from services.notifier.store import PRODUCER, NotifierStore
from shared.broker import EventPublisher, make_broker
from shared.logs import configure_logging
from shared.outbox import OutboxRelay
from shared.runtime import consumer_app, open_pool, serve
from shared.settings import Settings


async def run(settings: Settings) -> None:
    configure_logging(settings.log_level, settings.log_format)
    pool = await open_pool(settings)
    broker = make_broker(settings, service="notifier", prefetch=settings.consumer_prefetch)
    sender = SmtpSender(settings)
    service = NotifierService(NotifierStore(pool), IntroRenderer(), sender, settings.smtp_from)
    handlers.register(broker, service)
    relay = OutboxRelay(
        pool, EventPublisher(broker, "notifier"), PRODUCER, database_url=settings.database_url
    )
    app = consumer_app(broker=broker, pool=pool, relay=relay)
    app.after_shutdown(sender.close)
    await serve(app, host=settings.metrics_host, port=settings.notifier_metrics_port)
