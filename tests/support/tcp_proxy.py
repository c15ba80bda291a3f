"""A small TCP proxy for fault tests: slows every chunk down, and cuts all connections on demand
(a flaky network between a service and RabbitMQ)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.infra import free_port


class TcpProxy:
    def __init__(self, upstream_port: int, delay: float = 0.0) -> None:
        self.port = free_port()
        self.delay = delay
        self._upstream = upstream_port
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.base_events.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await reader.read(65536):
                if self.delay:
                    await asyncio.sleep(self.delay)
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _handle(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream)
        except OSError:
            client_writer.close()
            return
        self._writers |= {client_writer, up_writer}
        await asyncio.gather(
            self._pump(client_reader, up_writer), self._pump(up_reader, client_writer)
        )
        self._writers -= {client_writer, up_writer}

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    def cut(self) -> int:
        """Close every open connection (new ones are still accepted); return how many."""

        async def cut_all() -> int:
            writers = list(self._writers)
            for writer in writers:
                writer.close()
            return len(writers)

        return asyncio.run_coroutine_threadsafe(cut_all(), self._loop).result(10)

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                writer.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@contextmanager
def tcp_proxy(upstream_port: int, delay: float = 0.0) -> Iterator[TcpProxy]:
    proxy = TcpProxy(upstream_port, delay)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()
