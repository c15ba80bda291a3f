"""Group commit: work that arrives at the same time is done together.

`Coalescer` (consumers): messages delivered at the same time are applied together, by up to
`workers` transactions at once (two overlap one's database round trips with the other's Python).
`CoalescingPublisher` (producers): events that concurrent requests publish at the same time
travel in one AMQP message, under one confirm.

A consumer handles up to its prefetch of messages at once. Applied one transaction each, a
stream of single-event messages (one HTTP request each) costs a transaction per event, and the
matcher tops out near a hundred events a second; applied as one batch, the same events cost a
few statements each. The coalescer hands `apply` every message waiting, grouped by event type,
one group (one transaction) at a time; while a group is applied the next messages gather, so
batches grow with the load and a lone message waits for nothing.

Each message's handler still awaits the outcome of its own events and acks only after the
transaction that held them committed. A group that fails with an error that is not transient
is applied again message by message, so one poison message is parked alone and the others
succeed; a transient failure fails every message of the group (each is requeued).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from shared.events import Event, EventBatch

Apply = Callable[[EventBatch], Awaitable[None]]
Publish = Callable[[Sequence[Event]], Awaitable[None]]


@dataclass
class _Waiting:
    batch: EventBatch
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class Coalescer:
    def __init__(
        self,
        apply: Apply,
        *,
        transient: tuple[type[BaseException], ...],
        max_events: int = 2000,
        workers: int = 1,
    ) -> None:
        self._apply = apply
        self._transient = transient
        self._max_events = max_events
        self._workers = workers
        self._waiting: list[_Waiting] = []
        self._flushers: set[asyncio.Task[None]] = set()

    async def apply(self, batch: EventBatch) -> None:
        """Apply this message's events (with whatever else is waiting); return once they are
        committed, or raise what applying them raised."""
        waiting = _Waiting(batch)
        self._waiting.append(waiting)
        if len(self._flushers) < self._workers:
            flusher = asyncio.create_task(self._flush(), name="coalescer")
            self._flushers.add(flusher)
            flusher.add_done_callback(self._flushers.discard)
        await asyncio.shield(waiting.done)

    async def _flush(self) -> None:
        # Let every handler the broker already dispatched in this tick add its message first.
        group: list[_Waiting] = []
        try:
            await asyncio.sleep(0)
            while self._waiting:
                group = self._next_group()
                await self._apply_group(group)
        except BaseException as exc:  # cancelled at shutdown: no handler may wait forever
            for waiting in group + self._waiting:
                _fail(waiting, exc)
            self._waiting = []
            raise

    def _next_group(self) -> list[_Waiting]:
        """The oldest waiting message and every other one of its type, up to max_events."""
        kind = self._waiting[0].batch.type
        group: list[_Waiting] = []
        size = 0
        for waiting in self._waiting:
            if waiting.batch.type != kind:
                continue
            if group and size + len(waiting.batch.events) > self._max_events:
                break
            group.append(waiting)
            size += len(waiting.batch.events)
        taken = {id(w) for w in group}
        self._waiting = [w for w in self._waiting if id(w) not in taken]
        return group

    async def _apply_group(self, group: list[_Waiting]) -> None:
        if len(group) == 1:
            await self._settle(group[0])
            return
        events: list[Event] = []
        seen = set()
        for waiting in group:
            for event in waiting.batch.events:
                if event.message_id not in seen:  # a redelivery beside its original
                    seen.add(event.message_id)
                    events.append(event)
        try:
            # Constructed, not validated again: every event was validated when decoded.
            await self._apply(EventBatch.model_construct(events=events))
        except self._transient as exc:
            for waiting in group:
                _fail(waiting, exc)
        except Exception:  # noqa: BLE001 - any other error: find the culprit, each message alone
            for waiting in group:
                await self._settle(waiting)
        else:
            for waiting in group:
                if not waiting.done.done():
                    waiting.done.set_result(None)

    async def _settle(self, waiting: _Waiting) -> None:
        try:
            await self._apply(waiting.batch)
        except Exception as exc:  # noqa: BLE001 - handed to the message's handler, which decides
            _fail(waiting, exc)
        else:
            if not waiting.done.done():
                waiting.done.set_result(None)


def _fail(waiting: _Waiting, exc: BaseException) -> None:
    if not waiting.done.done():
        waiting.done.set_exception(exc)


@dataclass
class _Outgoing:
    events: Sequence[Event]
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class CoalescingPublisher:
    """Publishes the events of concurrent callers together: a request's events all travel in
    one message (so each is still accepted whole or not at all), beside those of the other
    requests that published at the same moment, under one confirm. RabbitMQ's cost is per
    message, so a hundred single-event requests in flight cost a handful of messages.

    Events are grouped by type and by the bulk flag (a consumer treats a message's events
    alike), at most `max_events` per message, and the messages of one moment are published
    concurrently. Every caller returns when its message is confirmed, or raises what
    publishing it raised."""

    def __init__(self, publish: Publish, *, max_events: int = 1000) -> None:
        self._publish = publish
        self._max_events = max_events
        self._outgoing: list[_Outgoing] = []
        # Flushes in flight (each collects one tick's events, then publishes them); a new one
        # starts as soon as the previous one has collected, so publishes overlap as before.
        self._flushes: set[asyncio.Task[None]] = set()
        self._collecting = False

    async def publish(self, events: Sequence[Event]) -> None:
        if not events:
            return
        outgoing = _Outgoing(events)
        self._outgoing.append(outgoing)
        if not self._collecting:
            self._collecting = True
            task = asyncio.create_task(self._flush(), name="coalescing-publisher")
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)
        await asyncio.shield(outgoing.done)

    async def _flush(self) -> None:
        # One tick: every request handled in this turn of the loop adds its events first.
        try:
            await asyncio.sleep(0)
        except BaseException as exc:
            for outgoing in self._outgoing:
                _fail_outgoing(outgoing, exc)
            self._outgoing = []
            raise
        finally:
            self._collecting = False
        taken, self._outgoing = self._outgoing, []
        groups: dict[tuple[str, bool], list[list[_Outgoing]]] = {}
        for outgoing in taken:
            first = outgoing.events[0]
            messages = groups.setdefault((first.type, first.bulk), [[]])
            size = sum(len(o.events) for o in messages[-1])
            if messages[-1] and size + len(outgoing.events) > self._max_events:
                messages.append([])
            messages[-1].append(outgoing)
        await asyncio.gather(
            *(self._send(message) for messages in groups.values() for message in messages)
        )

    async def _send(self, message: list[_Outgoing]) -> None:
        try:
            await self._publish([event for outgoing in message for event in outgoing.events])
        except Exception as exc:  # noqa: BLE001 - each caller gets it (a 503 for a request)
            for outgoing in message:
                _fail_outgoing(outgoing, exc)
        except BaseException as exc:  # cancelled: no caller may wait forever
            for outgoing in message:
                _fail_outgoing(outgoing, exc)
            raise
        else:
            for outgoing in message:
                if not outgoing.done.done():
                    outgoing.done.set_result(None)


def _fail_outgoing(outgoing: _Outgoing, exc: BaseException) -> None:
    if not outgoing.done.done():
        outgoing.done.set_exception(exc)
