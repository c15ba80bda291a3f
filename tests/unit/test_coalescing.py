"""Group commit: concurrent messages applied together, a poison message isolated."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from shared.coalescing import Coalescer, CoalescingPublisher
from shared.events import (
    ContactOptedOut,
    Event,
    EventBatch,
    InterestData,
    InterestDeclared,
    OptOutData,
)


class Transient(Exception):
    pass


def interest(i: int) -> EventBatch:
    return EventBatch(
        events=[
            InterestDeclared(
                source="ingest",
                correlation_id="c",
                data=InterestData(source="t", external_id=str(i), topic="kites"),
            )
        ]
    )


def opt_out(i: int) -> EventBatch:
    return EventBatch(
        events=[
            ContactOptedOut(
                source="ingest", correlation_id="c", data=OptOutData(source="t", external_id=str(i))
            )
        ]
    )


class Recorder:
    def __init__(self, poison: set[str] | None = None, transient: bool = False) -> None:
        self.calls: list[list[str]] = []
        self.poison = poison or set()
        self.transient = transient

    async def apply(self, batch: EventBatch) -> None:
        ids = [e.data.external_id for e in batch.events]  # type: ignore[union-attr]
        self.calls.append(ids)
        await asyncio.sleep(0.01)
        if self.transient:
            raise Transient
        if self.poison & set(ids):
            raise ValueError("poison")


async def test_messages_arriving_together_are_one_apply() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.apply, transient=(Transient,))
    await asyncio.gather(*(coalescer.apply(interest(i)) for i in range(10)))
    assert recorder.calls == [[str(i) for i in range(10)]]


async def test_messages_arriving_during_an_apply_form_the_next_group() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.apply, transient=(Transient,))
    first = asyncio.create_task(coalescer.apply(interest(0)))
    await asyncio.sleep(0.002)  # the first group is being applied
    await asyncio.gather(first, *(coalescer.apply(interest(i)) for i in range(1, 5)))
    assert recorder.calls == [["0"], ["1", "2", "3", "4"]]


async def test_types_are_never_mixed_and_the_oldest_goes_first() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.apply, transient=(Transient,))
    await asyncio.gather(
        coalescer.apply(interest(1)), coalescer.apply(opt_out(2)), coalescer.apply(interest(3))
    )
    assert recorder.calls == [["1", "3"], ["2"]]


async def test_a_poison_message_fails_alone() -> None:
    recorder = Recorder(poison={"3"})
    coalescer = Coalescer(recorder.apply, transient=(Transient,))
    results = await asyncio.gather(
        *(coalescer.apply(interest(i)) for i in range(5)), return_exceptions=True
    )
    assert [type(r) for r in results] == [type(None)] * 3 + [ValueError, type(None)]
    assert recorder.calls[0] == ["0", "1", "2", "3", "4"]
    assert recorder.calls[1:] == [["0"], ["1"], ["2"], ["3"], ["4"]]


async def test_a_transient_failure_fails_every_message_of_the_group() -> None:
    recorder = Recorder(transient=True)
    coalescer = Coalescer(recorder.apply, transient=(Transient,))
    results = await asyncio.gather(
        *(coalescer.apply(interest(i)) for i in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, Transient) for r in results)
    assert len(recorder.calls) == 1


async def test_a_group_stops_at_max_events() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.apply, transient=(Transient,), max_events=2)
    await asyncio.gather(*(coalescer.apply(interest(i)) for i in range(5)))
    assert recorder.calls == [["0", "1"], ["2", "3"], ["4"]]


async def test_a_redelivered_event_beside_its_original_is_applied_once() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.apply, transient=(Transient,))
    batch = interest(7)
    await asyncio.gather(coalescer.apply(batch), coalescer.apply(batch))
    assert recorder.calls == [["7"]]


async def test_a_lone_message_is_applied_as_it_is() -> None:
    recorder = Recorder()
    coalescer = Coalescer(recorder.apply, transient=(Transient,))
    await coalescer.apply(interest(1))
    assert recorder.calls == [["1"]]


class Broker:
    def __init__(self, fail: bool = False) -> None:
        self.messages: list[list[str]] = []
        self.fail = fail
        self.confirm = asyncio.Event()
        self.confirm.set()

    async def publish(self, events: Sequence[Event]) -> None:
        self.messages.append([e.data.external_id for e in events])  # type: ignore[union-attr]
        await self.confirm.wait()
        if self.fail:
            raise ConnectionError("no confirm")


def bulk_interest(i: int) -> EventBatch:
    event = interest(i).events[0]
    return EventBatch(events=[event.model_copy(update={"bulk": True})])


async def test_concurrent_requests_share_one_message_per_type_and_bulk_flag() -> None:
    broker = Broker()
    publisher = CoalescingPublisher(broker.publish)
    await asyncio.gather(
        publisher.publish(interest(1).events),
        publisher.publish(opt_out(2).events),
        publisher.publish(interest(3).events + interest(4).events),
        publisher.publish(bulk_interest(5).events),
    )
    assert sorted(broker.messages) == [["1", "3", "4"], ["2"], ["5"]]


async def test_a_request_never_waits_for_an_earlier_message_to_be_confirmed() -> None:
    broker = Broker()
    broker.confirm.clear()
    publisher = CoalescingPublisher(broker.publish)
    first = asyncio.create_task(publisher.publish(interest(1).events))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(publisher.publish(interest(2).events))
    await asyncio.sleep(0.01)
    assert broker.messages == [["1"], ["2"]]  # both published before any confirm
    broker.confirm.set()
    await asyncio.gather(first, second)


async def test_an_unconfirmed_message_fails_every_request_in_it() -> None:
    publisher = CoalescingPublisher(Broker(fail=True).publish)
    results = await asyncio.gather(
        *(publisher.publish(interest(i).events) for i in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, ConnectionError) for r in results)


async def test_a_message_holds_at_most_max_events_and_never_splits_a_request() -> None:
    broker = Broker()
    publisher = CoalescingPublisher(broker.publish, max_events=3)
    await asyncio.gather(
        publisher.publish(interest(1).events + interest(2).events),
        publisher.publish(interest(3).events + interest(4).events),
        publisher.publish(interest(5).events),
    )
    assert sorted(broker.messages) == [["1", "2"], ["3", "4", "5"]]
