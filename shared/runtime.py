"""Running a consumer service: connect, declare the topology, consume, relay the outbox, serve
/metrics, /healthz and /readyz, and stop gracefully on SIGINT or SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import asyncpg
import uvicorn
from faststream.asgi import AsgiFastStream
from faststream.rabbit import RabbitBroker

from shared.db import create_pool, ping
from shared.ops import ops_routes
from shared.outbox import OutboxRelay
from shared.settings import Settings
from shared.topology import declare_topology

log = logging.getLogger("roac.runtime")
T = TypeVar("T")


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


async def open_pool(settings: Settings) -> asyncpg.Pool:
    return await retry_until_ready("PostgreSQL", lambda: create_pool(settings))


def consumer_app(
    *,
    broker: RabbitBroker,
    pool: asyncpg.Pool,
    relay: OutboxRelay,
) -> AsgiFastStream:
    relay_task: asyncio.Task[None] | None = None

    async def connect_and_declare() -> None:
        await retry_until_ready("RabbitMQ", broker.connect)
        await declare_topology(broker)

    async def start_relay() -> None:
        nonlocal relay_task
        relay_task = asyncio.create_task(relay.run(), name="outbox-relay")

    async def stop_relay() -> None:
        if relay_task is not None:
            relay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await relay_task

    async def close_pool() -> None:
        await pool.close()

    async def readiness() -> dict[str, bool]:
        broker_ok = await broker.ping(timeout=2.0)
        consuming = bool(broker.subscribers) and all(s.running for s in broker.subscribers)
        return {"broker": broker_ok, "consumers": consuming, "database": await ping(pool)}

    return AsgiFastStream(
        broker,
        asgi_routes=ops_routes(readiness),
        on_startup=[connect_and_declare],
        after_startup=[start_relay],
        on_shutdown=[stop_relay],
        after_shutdown=[close_pool],
        logger=logging.getLogger("roac.faststream"),
    )


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGINT/SIGTERM once `serve()` returns, which would kill the process
    before FastStream's graceful shutdown (finish in-flight messages, close the pool) runs.
    Here a signal only asks the server to exit; the caller then shuts the app down."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


async def serve(app: AsgiFastStream, *, host: str, port: int) -> None:
    """Start the broker and hooks (a failure raises and the process exits non-zero), serve the
    ops endpoints until SIGINT or SIGTERM, then shut down gracefully."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="off",
        log_level="warning",
        access_log=False,
        log_config=None,
    )
    async with app.start_lifespan_context():
        await _Server(config).serve()
