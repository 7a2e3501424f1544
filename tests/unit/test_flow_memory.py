"""A flow keeps an event only while it is in flight: what it finished leaves nothing behind.

A forwarder runs for months at a steady rate; anything kept per event, id, offset or
room would grow without end. The Python heap of the flows' own code (the projection's
and an endpoint's: their intakes, ledgers, the dispatcher, the applied gate, the
delivery) is measured with tracemalloc over 1,500 events through fakes, after a first
round that settles what is made once.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

from domain import MessageCreated
from forwarder.applied import AppliedGate
from forwarder.delivering import Delivering
from forwarder.dispatcher import Dispatcher
from forwarder.intake import Intake
from forwarder.ledger import Ledger
from forwarder.metrics import ForwarderMetrics
from forwarder.projecting import DeadLetteredPoison, Projecting
from forwarder.settings import ForwarderSettings
from forwarder.supervisor import BackoffPolicy
from tests.unit.fakes import FakeSource, MemoryReads, MemoryStore, Sink, Unwatched, batch, consumed, until
from webhooks.calls import Answer
from webhooks.dead_letters import DeadLetters
from webhooks.endpoints import Endpoint
from webhooks.sending import Deliverer

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)
PARTITIONS, ROOMS = 6, 50
# The code whose heap is measured: the store's fake keeps every message, as a store does.
MEASURED = ("*/forwarder/*", "*/webhooks/*")


async def _answered(url: str, body: bytes, headers: dict[str, str], timeout: float) -> Answer:
    return Answer(200)


@dataclass
class _Flows:
    """The projection's flow and one endpoint's, each on its own copy of the log."""

    projection: Ledger
    endpoint: Ledger
    delivering: Delivering
    sources: tuple[FakeSource, FakeSource]


@asynccontextmanager
async def _running() -> AsyncIterator[_Flows]:
    store, metrics, settings = (
        MemoryStore(),
        ForwarderMetrics(),
        ForwarderSettings(batch_max=100, poll_timeout=0.01),
    )
    dead_letters = DeadLetters(Sink(), "dead-letters")
    policy = BackoffPolicy(max_restarts=0)
    projected, projecting_source = Ledger(), FakeSource()
    projecting = Projecting(
        "projection", store, dead_letters, DeadLetteredPoison(dead_letters, metrics), projected, metrics
    )
    endpoint = Endpoint.model_validate({"name": "e", "url": "http://x.test/", "secret": SECRET})
    delivered, delivering_source = Ledger(), FakeSource()
    delivering = Delivering(
        "endpoint:e", Deliverer(_answered, endpoint), AppliedGate(MemoryReads(store)), delivered,
        dead_letters, metrics, Unwatched(),
    )  # fmt: skip
    flows = [
        Intake("projection", settings, projecting_source, projecting, projected, metrics, policy),
        Intake("endpoint:e", settings, delivering_source, delivering, delivered, metrics, policy),
    ]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(flow.run(stop)) for flow in flows]
    try:
        yield _Flows(projected, delivered, delivering, (projecting_source, delivering_source))
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 5)


async def _through(sources: tuple[FakeSource, ...], first: int, count: int) -> None:
    """Events ``first`` to ``first + count`` over the partitions and rooms, until all are committed."""
    for start in range(first, first + count, 100):
        for source in sources:
            source.push(
            batch(
                *(
                    consumed(n % PARTITIONS, n // PARTITIONS, MessageCreated(
                        UUID(int=n + 1), f"room-{n % ROOMS}", UUID(int=n + 1), "ann", f"message {n}", T0
                    ))
                    for n in range(start, min(start + 100, first + count))
                )
            )
        )  # fmt: skip
    end = first + count
    expected = {p: len(range(p, end, PARTITIONS)) for p in range(PARTITIONS)}
    await until(
        lambda: all(source.committed() == expected for source in sources),
        f"{end} events committed",
        timeout=30,
    )


def _heap() -> int:
    # What is kept, not what waits for the collector: how many cycles a run leaves uncollected at the
    # moment of a snapshot depends on when the collector last ran (on a loaded machine, 33 KB of them).
    gc.collect()
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(True, pattern) for pattern in MEASURED]
    )
    return sum(stat.size for stat in snapshot.statistics("filename"))


def _idle(dispatcher: Dispatcher) -> bool:
    return dispatcher.size == 0 and not dispatcher.feeding_partitions() and not dispatcher.parked_rooms()


async def test_a_flow_keeps_nothing_of_the_events_it_delivered_and_committed() -> None:
    events = 1_500
    async with _running() as flows:
        tracemalloc.start()
        try:
            # The same load once before measuring: metrics' children, and the tables of the
            # tracker and the queues at their widest (a dict keeps its size once grown).
            await _through(flows.sources, 0, events)
            before = _heap()
            await _through(flows.sources, events, events)
            grown = _heap() - before
        finally:
            tracemalloc.stop()
        assert flows.projection.tracker.pending() == flows.endpoint.tracker.pending() == 0
        assert _idle(flows.delivering.dispatcher)
    # A few KB is the interpreter's free lists (tuples, floats), counted where they were
    # first made; one small object kept per event would be 80 KB here.
    assert grown < 32 * 1024, f"the flow's heap grew by {grown:,} bytes over {events:,} events"
