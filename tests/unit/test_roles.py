"""Each role on a fake source: the projection's into a store, and an endpoint's through its dispatcher.

The delivering role is run alone here: the test plays the projection by applying records to the store
itself, so what the endpoint waits for and what it may deliver are the test's to say.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID

from domain import MessageCreated, MessageUpdated
from forwarder.applied import AppliedGate
from forwarder.delivering import Delivering
from forwarder.intake import Intake
from forwarder.jobs import Blocked, Job
from forwarder.ledger import Ledger
from forwarder.metrics import ForwarderMetrics
from forwarder.projecting import Projecting
from forwarder.settings import ForwarderSettings
from forwarder.source import Consumed
from forwarder.supervisor import BackoffPolicy
from tests.unit.fakes import (
    FakeSource,
    GatedSend,
    MemoryReads,
    MemoryStore,
    Sink,
    batch,
    consumed,
    poison,
    until,
)
from tests.unit.scripted import Scripted
from webhooks.calls import Send
from webhooks.dead_letters import DeadLetters
from webhooks.endpoints import Endpoint
from webhooks.sending import Deliverer

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)
SETTINGS = ForwarderSettings(batch_max=100, poll_timeout=0.01, backlog_pause_after=0.0)
NO_RESTARTS = BackoffPolicy(max_restarts=0)


def created(n: int, room: str = "a") -> MessageCreated:
    return MessageCreated(UUID(int=n), room, UUID(int=n), "ann", f"message {n}", T0)


@contextlib.asynccontextmanager
async def running(flow: Intake) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(flow.run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


# -- projecting -----------------------------------------------------------------------------------


class KeptPoison:
    """``PoisonRecords`` that keeps what it met."""

    def __init__(self) -> None:
        self.met_: list[list[tuple[int, int, str]]] = []

    async def met(self, poison: list[tuple[Consumed, str]]) -> None:
        self.met_.append([(c.record.partition, c.record.offset, reason) for c, reason in poison])


async def test_the_projecting_role_applies_each_batch_and_hands_its_poison_to_its_poison_records() -> None:
    source, store, sink, ledger, metrics, poisoned = (
        FakeSource(), MemoryStore(), Sink(), Ledger(), ForwarderMetrics(), KeptPoison(),
    )  # fmt: skip
    role = Projecting("projection", store, DeadLetters(sink, "dlq"), poisoned, ledger, metrics)
    flow = Intake("projection", SETTINGS, source, role, ledger, metrics, NO_RESTARTS)
    bad = poison(0, 1, b"{nope")
    async with running(flow):
        source.push(batch(consumed(0, 0, created(0)), bad, consumed(1, 0, created(1, "b"))))
        await until(lambda: source.committed() == {0: 2, 1: 1}, "committed past the batch")
    assert poisoned.met_ == [[(0, 1, bad.malformed)]]
    assert sink.sent == []  # the role's PoisonRecords decide where poison goes
    assert store.snapshot.positions == {0: 1, 1: 0}
    assert [[r.offset for r in records] for records in store.applied] == [[0, 1, 0]]
    assert (
        metrics.registry.get_sample_value("merlin_projection_batch_records_count", {"flow": "projection"})
        == 1
    )
    assert role.to_pause({0}) == set()  # it waits on nothing but its store


# -- delivering -----------------------------------------------------------------------------------


@dataclass
class Heard:
    """A ``DispatchWatch`` that keeps what it heard."""

    said: list[tuple[str, ...]] = field(default_factory=list)

    def blocked(self, endpoint: str, room: Blocked) -> None:
        self.said.append(("blocked", endpoint, room.job.event_id))

    def finished(self, endpoint: str, job: Job) -> None:
        self.said.append(("finished", endpoint, job.event_id))

    def delivered(self, endpoint: str, outcome: str) -> None:
        self.said.append(("delivered", endpoint, outcome))


@dataclass
class Endpointed:
    flow: Intake
    role: Delivering
    source: FakeSource
    store: MemoryStore
    sink: Sink
    heard: Heard
    metrics: ForwarderMetrics

    def sample(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)


def endpoint_flow(send: Send, **endpoint: object) -> Endpointed:
    source, store, sink, ledger, metrics, heard = (
        FakeSource(), MemoryStore(), Sink(), Ledger(), ForwarderMetrics(), Heard(),
    )  # fmt: skip
    config = {"name": "e", "url": "http://x.test/", "secret": SECRET, **endpoint}
    deliverer = Deliverer(send, Endpoint.model_validate(config))
    gate = AppliedGate(MemoryReads(store))
    role = Delivering("endpoint:e", deliverer, gate, ledger, DeadLetters(sink, "dlq"), metrics, heard)
    flow = Intake("endpoint:e", SETTINGS, source, role, ledger, metrics, NO_RESTARTS)
    return Endpointed(flow, role, source, store, sink, heard, metrics)


async def test_the_delivering_role_waits_for_the_projection_then_delivers_only_what_it_applied() -> None:
    send = GatedSend()
    e = endpoint_flow(send, event_types=["MessageCreated"])
    a0, edit = created(0), MessageUpdated(UUID(int=1), "a", UUID(int=0), "ann", "edit", T0)
    stray = MessageUpdated(UUID(int=2), "b", UUID(int=9), "ann", "edit", T0)  # no such message: rejected
    records = [consumed(0, 0, a0), consumed(0, 1, edit), poison(0, 2, b"{nope"), consumed(1, 0, stray)]
    async with running(e.flow):
        e.source.push(batch(*records))
        await e.source.turns(3)
        assert (send.calls, e.source.commits) == ([], [])  # the projection has not passed the batch
        await e.store.apply([c.record for c in records])  # the projection passes it
        await until(lambda: send.calls == [str(a0.event_id)], "the one applied create sent")
        await until(lambda: e.source.committed() == {1: 1}, "the rest finished at once")
        send.release(a0)
        await until(lambda: e.source.committed() == {0: 3, 1: 1}, "committed past the delivered event")
    assert e.sink.sent == []  # the projection dead-letters the poison record, not an endpoint
    assert e.heard.said == [("delivered", "e", "delivered"), ("finished", "e", str(a0.event_id))]
    assert e.sample("merlin_deliveries_total", endpoint="e", outcome="delivered") == 1
    assert e.sample("merlin_delivery_buffered", endpoint="e") == 1  # as it stood when the call ended


async def test_a_blocked_room_is_reported_once_and_holds_the_commit() -> None:
    e = endpoint_flow(Scripted([400]), on_failure="block")
    a0, a1, b0 = created(0), created(1), created(2, "b")
    records = [consumed(0, 0, a0), consumed(0, 1, a1), consumed(0, 2, b0)]
    async with running(e.flow):
        await e.store.apply([c.record for c in records])
        e.source.push(batch(*records))
        await until(lambda: ("finished", "e", str(b0.event_id)) in e.heard.said, "room b delivered")
        await e.source.turns()
        assert e.source.committed() in (None, {})  # nothing passes room a's blocked head
        assert set(e.role.dispatcher.blocked_rooms()) == {"a"}
    assert sorted(e.heard.said) == sorted(
        [
            ("delivered", "e", "blocked"),
            ("blocked", "e", str(a0.event_id)),
            ("delivered", "e", "delivered"),
            ("finished", "e", str(b0.event_id)),
        ]
    )
    assert e.heard.said.index(("delivered", "e", "blocked")) + 1 == e.heard.said.index(
        ("blocked", "e", str(a0.event_id))
    )
    assert e.sample("merlin_delivery_blocked_rooms", endpoint="e") == 1
    assert e.sample("merlin_deliveries_total", endpoint="e", outcome="blocked") == 1


async def test_a_failed_delivery_is_dead_lettered_counted_and_finished() -> None:
    e = endpoint_flow(Scripted([400]))
    a0 = created(0)
    async with running(e.flow):
        await e.store.apply([consumed(0, 0, a0).record])
        e.source.push(batch(consumed(0, 0, a0)))
        await until(lambda: e.source.committed() == {0: 1}, "committed past the dead-lettered event")
    [letter] = e.sink.sent
    assert (letter.topic, letter.key) == ("dlq", b"a")
    assert e.heard.said == [("delivered", "e", "dead_lettered"), ("finished", "e", str(a0.event_id))]
    assert e.sample("merlin_dead_letters_total", stage="delivery") == 1


async def test_a_full_dispatcher_asks_for_its_feeding_partitions_to_be_paused_until_half_drained() -> None:
    send = GatedSend()
    e = endpoint_flow(send, buffer=2)
    a0, b0 = created(0), created(1, "b")
    async with running(e.flow):
        await e.store.apply([consumed(0, 0, a0).record, consumed(1, 0, b0).record])
        e.source.push(batch(consumed(0, 0, a0), consumed(1, 0, b0)))
        await until(lambda: e.source.pauses == [{0, 1}], "both partitions paused")
        assert e.role.to_pause({0, 1}) == {0, 1}
        send.release(a0)
        await until(lambda: e.source.resumes == [{0, 1}], "resumed once drained to half")
        assert e.role.to_pause({0, 1}) == set()
        send.release(b0)
        await until(lambda: e.source.committed() == {0: 1, 1: 1}, "both committed")
