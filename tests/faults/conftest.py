"""The fault-injection suite (`make test-faults`): the live stack, something real killed or cut,
and a pass rule for each scenario: no accepted event lost, no introduction duplicated, serving
again within a bound. RabbitMQ and PostgreSQL are stopped and restarted for everyone on the
machine, so this suite runs on its own, never beside other tests."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import aio_pika
import httpx
import pytest

from shared.topology import INGRESS_EXCHANGE
from tests.e2e.conftest import Stack, running_stack
from tests.support.processes import ServiceProcess

RECOVERY_SECONDS = 60.0  # the bound: serving again (all ready) within a minute of the fault's end
DELIVERY_SECONDS = 90.0  # every accepted pair introduced within this of the fault's end


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    with running_stack(
        "faults",
        tmp_path_factory.mktemp("fault-logs"),
        request,
        ROAC_INTRO_MODE="direct",
        ROAC_MATCH_MIN_SCORE="0.1",  # any shared topic will do: the suite is about delivery
        ROAC_QUIET_HOURS_ENABLED="false",
        ROAC_RETRY_BASE_SECONDS="1",
        # The delivery bursts (test_faults.py): webhooks to the local fake providers, and
        # orphaned in-flight sends reconciled 15 s after they started rather than a minute.
        ROAC_WEBHOOK_ALLOWED_HOSTS="127.0.0.1",
        ROAC_DELIVERY_IN_FLIGHT_SECONDS="15",
    ) as created:
        yield created


@dataclass
class Pair:
    run: str

    @property
    def emails(self) -> tuple[str, str]:
        return (f"a.{self.run}@example.org", f"b.{self.run}@example.org")


@dataclass
class Workload:
    """Introduces pairs through the live HTTP API; a pair counts as accepted only if every one
    of its requests was answered 202."""

    stack: Stack
    accepted: list[Pair] = field(default_factory=list)
    refused: list[Pair] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def introduce(self, client: httpx.Client) -> None:
        pair = Pair(uuid.uuid4().hex[:10])
        ok = True
        for path, body in _pair_requests(pair):
            try:
                ok = ok and client.post(path, json=body).status_code == 202
            except httpx.HTTPError:
                ok = False
        (self.accepted if ok else self.refused).append(pair)

    async def introduce_over_ingress(self, amqp_url: str, copies: int = 2) -> None:
        """The same requests as `introduce`, published to the AMQP ingress exchange instead,
        each message `copies` times with the same message id (a redelivery, as an integration
        that retries after a lost confirm makes one); accepted once RabbitMQ confirmed all."""
        pair = Pair(uuid.uuid4().hex[:10])
        connection = await aio_pika.connect_robust(amqp_url)
        async with connection:
            channel = await connection.channel()
            exchange = await channel.get_exchange(INGRESS_EXCHANGE.name)
            for path, body in _pair_requests(pair):
                message_id = str(uuid.uuid4())
                for _ in range(copies):
                    await exchange.publish(
                        aio_pika.Message(
                            json.dumps(body).encode(),
                            message_id=message_id,
                            content_type="application/json",
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key=path.removeprefix("/v1/"),
                    )
        self.accepted.append(pair)

    def run_in_background(self, pause: float = 0.05) -> None:
        def loop() -> None:
            with self.stack.client() as client:
                while not self._stop.is_set():
                    self.introduce(client)
                    time.sleep(pause)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def mails_by_key(self, address: str) -> Counter[str]:
        return Counter(m.message_id for m in self.stack.sink.to(address))

    def check(self, within: float = DELIVERY_SECONDS) -> dict[str, int]:
        """The pass rule: every accepted pair's two people got their introduction, nobody got
        two different ones; return the counts for the report."""
        assert self.accepted, "nothing was accepted: the scenario proved nothing"
        deadline = time.monotonic() + within
        missing = list(self.accepted)
        while missing and time.monotonic() < deadline:
            missing = [p for p in missing if not all(self.stack.sink.to(e) for e in p.emails)]
            time.sleep(0.5)
        assert not missing, f"{len(missing)} accepted pairs never introduced: {missing[:3]}"
        time.sleep(2)  # anything more would be a duplicate
        repeats = 0
        for pair in self.accepted + self.refused:
            for email in pair.emails:
                keys = self.mails_by_key(email)
                assert len(keys) <= 1, f"{email} got {len(keys)} different introductions"
                repeats += sum(keys.values()) - len(keys)
        return {
            "accepted": len(self.accepted),
            "refused": len(self.refused),
            "resent_same_key": repeats,
        }


@pytest.fixture
def workload(stack: Stack) -> Iterator[Workload]:
    # The stack outlives each scenario: one that failed with a service down must not fail the
    # scenarios after it for that reason alone.
    for process in stack.processes:
        if not process.running:
            process.start()
    created = Workload(stack)
    yield created
    created.stop()


def _pair_requests(pair: Pair) -> list[tuple[str, dict[str, object]]]:
    """Two people and one shared topic: the contacts, then each one's interest."""
    people = [
        {
            "source": "faults",
            "external_id": f"{pair.run}-{side}",
            "name": f"{side.upper()} {pair.run}",
            "email": email,
            "timezone": "UTC",
        }
        for side, email in zip("ab", pair.emails, strict=True)
    ]
    contacts: tuple[str, dict[str, object]] = ("/v1/contacts", {"items": people})
    return [contacts] + [
        (
            "/v1/interests",
            {"source": "faults", "external_id": p["external_id"], "topic": f"fault {pair.run}"},
        )
        for p in people
    ]


def wait_ready(processes: list[ServiceProcess], within: float = RECOVERY_SECONDS) -> float:
    started = time.monotonic()
    for process in processes:
        process.wait_ready(max(1.0, within - (time.monotonic() - started)))
    return time.monotonic() - started
