"""Group commit: concurrent messages applied together, a poison message isolated."""

from __future__ import annotations

import asyncio

from shared.coalescing import Coalescer
from shared.events import ContactOptedOut, EventBatch, InterestData, InterestDeclared, OptOutData


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
