"""Running a consumer service: a FastAPI app whose lifespan connects RabbitMQ, declares the
topology, starts the subscribers, the outbox relay and any background loops, and on SIGINT or
SIGTERM stops them gracefully (in-flight messages finish, then the pool closes)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from typing import Any, Literal, TypeVar

import aio_pika
import asyncpg
import uvicorn
from fastapi import APIRouter, FastAPI
from faststream.rabbit import RabbitBroker

from shared.db import DatabaseCheck, create_pool
from shared.http_app import http_app
from shared.ops import router as ops_router
from shared.outbox import OutboxRelay
from shared.settings import Settings
from shared.shutdown import ShutdownSteps
from shared.topology import declare_topology

log = logging.getLogger("roac.runtime")
T = TypeVar("T")
CHECK_SECONDS = 5.0  # the longest a readiness check of the consumers may take
# In-flight HTTP requests get this long once a shutdown begins (then the lifespan's steps run).
HTTP_SHUTDOWN_SECONDS = 5
BackgroundLoop = Callable[[], Coroutine[Any, Any, None]]


async def retry_until_ready(
    what: str, connect: Callable[[], Awaitable[T]], *, attempts: int = 60
) -> T:
    """Start-up tolerates a broker or database that is still coming up (as under compose)."""
    delay = 0.5
    for attempt in range(1, attempts + 1):
        try:
            return await connect()
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError) as exc:
            if attempt == attempts:
                raise
            log.warning("%s not reachable yet (%r); retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
    raise AssertionError("unreachable")


async def open_pool(settings: Settings, max_size: int | None = None) -> asyncpg.Pool:
    return await retry_until_ready("PostgreSQL", lambda: create_pool(settings, max_size=max_size))


def consumer_app(
    *,
    title: str,
    amqp_url: str,
    database_url: str,
    broker: RabbitBroker,
    pool: asyncpg.Pool,
    relay: OutboxRelay,
    background: Sequence[BackgroundLoop] = (),
    routers: Sequence[APIRouter] = (),
    on_close: Sequence[Callable[[], Awaitable[None]]] = (),
    shutdown_seconds: float = 20.0,
) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await retry_until_ready("RabbitMQ", broker.connect)
        await declare_topology(broker)
        await broker.start()
        tasks = [asyncio.create_task(relay.run(), name="outbox-relay")]
        tasks += [
            asyncio.create_task(loop(), name=getattr(loop, "__name__", "loop"))
            for loop in background
        ]
        log.info("%s started", title)
        try:
            yield
        finally:
            steps = ShutdownSteps(title, budget_seconds=shutdown_seconds)
            await steps.step("background tasks", cancel_all(tasks), within=5)
            # Stops consuming, waits for in-flight handlers (graceful_timeout), disconnects.
            await steps.step("consumers and broker", broker.stop(), within=shutdown_seconds)
            for close in on_close:
                await steps.step(getattr(close, "__qualname__", "close"), close(), within=5)
            await steps.step("consumer check connection", consumers_present.close(), within=2)
            await steps.step("database check connection", database_answers.close(), within=2)
            await steps.step("database pool", close_pool(pool), within=5)
            steps.finish()
            app.state.clean_shutdown = steps.clean

    consumers_present = ConsumerCheck(broker, amqp_url)
    database_answers = DatabaseCheck(database_url)

    async def readiness() -> dict[str, bool]:
        broker_ok = await broker.ping(timeout=2.0)
        consuming = broker_ok and await consumers_present()
        return {"broker": broker_ok, "consumers": consuming, "database": await database_answers()}

    # OpenAPI docs only where there is an API beyond the operations endpoints.
    docs = "/docs" if routers else None
    app = http_app(title=title, lifespan=lifespan, docs_url=docs, redoc_url=None)
    app.state.readiness = readiness
    app.include_router(ops_router)
    for router in routers:
        app.include_router(router)
    return app


async def cancel_all(tasks: Sequence[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def close_pool(pool: asyncpg.Pool) -> None:
    """Close the pool; a connection never released (a handler cut short) is terminated rather
    than waited for, which asyncpg's close() would do forever."""
    try:
        await pool.close()
    except asyncio.CancelledError:
        pool.terminate()
        raise


class ConsumerCheck:
    """Whether every subscriber consumes, as RabbitMQ sees it: its channel is open and its queue
    counts at least one consumer. FastStream's own `running` flag stays true while a broker
    restart has taken the consumer away, so it cannot tell. The check asks over a connection of
    its own: not the busy consuming channel (a process working through a backlog still answers),
    and not one whose recovery it would have to second-guess."""

    def __init__(self, broker: RabbitBroker, amqp_url: str) -> None:
        self._broker = broker
        self._url = amqp_url
        self._connection: aio_pika.abc.AbstractConnection | None = None

    async def __call__(self) -> bool:
        subscribers = self._broker.subscribers
        if not subscribers:
            return False
        try:
            # One bound for the whole check (connect, channel, declares): a readiness request
            # that never returns would also hold up the server's shutdown.
            async with asyncio.timeout(CHECK_SECONDS):
                if self._connection is None or self._connection.is_closed:
                    self._connection = await aio_pika.connect(self._url, timeout=CHECK_SECONDS)
                async with self._connection.channel(publisher_confirms=False) as channel:
                    for subscriber in subscribers:
                        # FastStream keeps the aio-pika queue a subscriber consumes from.
                        queue = getattr(subscriber, "_queue_obj", None)
                        if not subscriber.running or queue is None or queue.channel.is_closed:
                            return False
                        declared = await channel.declare_queue(queue.name, passive=True)
                        if not declared.declaration_result.consumer_count:
                            return False
        except (Exception, TimeoutError):  # noqa: BLE001 - any failure here means "not consuming"
            await self.close()
            return False
        return True

    async def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
            self._connection = None


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGINT/SIGTERM after a graceful shutdown, so the process would end
    "killed by signal"; here a signal only asks the server to exit, and the process exits 0
    once everything stopped within its bound (1 if something had to be cut short)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    def __init__(self, config: uvicorn.Config, companions: Sequence[uvicorn.Server] = ()) -> None:
        super().__init__(config)
        self.companions = companions

    def _on_signal(self, sig: signal.Signals) -> None:
        # A second signal makes uvicorn skip waiting for open requests.
        log.info("%s received: shutting down", sig.name)
        for companion in self.companions:
            companion.handle_exit(sig, None)
        self.handle_exit(sig, None)


class _CompanionServer(uvicorn.Server):
    """A second listener of the same process (the notifier's public pages): no lifespan of its
    own (the main app's runs everything) and no signal handlers (the main server forwards)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _config(app: FastAPI, host: str, port: int, lifespan: Literal["on", "off"]) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan=lifespan,
        log_level="warning",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=HTTP_SHUTDOWN_SECONDS,
    )


async def serve(
    app: FastAPI, *, host: str, port: int, public: tuple[FastAPI, str, int] | None = None
) -> None:
    """Serve until SIGINT or SIGTERM; a start-up failure raises (the process exits non-zero).
    `public` is a second app on its own host and port (pages for the internet, apart from the
    operations port), listening before the main app starts and stopped once it stopped."""
    companions: list[uvicorn.Server] = []
    if public is not None:
        public_app, public_host, public_port = public
        companions.append(_CompanionServer(_config(public_app, public_host, public_port, "off")))
    server = _Server(_config(app, host, port, "on"), companions)
    # The public listener starts first: once the main app reports ready, its pages answer too
    # (readiness is checked on the main port).
    companion_tasks = [asyncio.create_task(c.serve()) for c in companions]
    # uvicorn has no "started" event to wait on: poll its flag.
    while any(not c.started for c in companions):
        if any(task.done() for task in companion_tasks):
            for task in companion_tasks:
                task.cancel()
            raise SystemExit(
                f"{app.title}: the public listener did not start; see the errors above"
            )
        await asyncio.sleep(0.02)
    try:
        await server.serve()
    finally:
        for companion in companions:
            companion.should_exit = True
        for task in companion_tasks:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await task
    if not server.started:
        raise SystemExit(f"{app.title} did not start; see the errors above")
    if not getattr(app.state, "clean_shutdown", True):
        raise SystemExit(1)  # work was cut short (logged): redelivered, but worth a look
