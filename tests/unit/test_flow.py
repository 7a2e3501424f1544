"""The forwarder's flow end to end without a broker: back-pressure, rebalances, commit order, dead letters.

Each test runs ``Flow.run(stop)`` as a task over in-memory fakes (``tests.unit.fakes``): a scripted
source, a store that applies the real projection rules, a dead-letter sink and an endpoint whose
answers the test releases one event at a time. Waits are bounded and wait for a condition, never
for time to pass.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import orjson

from domain import Event, MessageCreated, MessageUpdated, encode
from forwarder.dead_letters import DeadLetters
from forwarder.delivery import Deliverer, Send
from forwarder.endpoints import Endpoint
from forwarder.flow import _PROJECTOR_QUEUE, Flow
from forwarder.metrics import ForwarderMetrics
from forwarder.settings import ForwarderSettings
from forwarder.supervisor import BackoffPolicy
from tests.unit.fakes import (
    TOPIC,
    FakeSource,
    GatedSend,
    MemoryStore,
    Sent,
    Sink,
    batch,
    consumed,
    poison,
    until,
)
from tests.unit.scripted import Scripted

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
DLQ = "merlin.dead-letters"
T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)


def created(n: int, room: str) -> MessageCreated:
    return MessageCreated(UUID(int=n), room, UUID(int=n), "ann", f"message {n}", T0)


def eid(event: Event) -> str:
    return str(event.event_id)


@dataclass
class Rig:
    flow: Flow
    source: FakeSource
    store: MemoryStore
    sink: Sink


def rig(
    send: Send | None = None,
    *,
    batch_max: int = 100,
    store: MemoryStore | None = None,
    sink: Sink | None = None,
    **endpoint: object,
) -> Rig:
    """A flow over fakes, with one endpoint "e" served by ``send`` (none without it).

    A stage that crashes is not restarted: it fails the flow, and so the test.
    """
    source, store, sink = FakeSource(), store or MemoryStore(), sink or Sink()
    settings = ForwarderSettings(batch_max=batch_max, poll_timeout=0.01)
    config = {"name": "e", "url": "http://x.test/", "secret": SECRET, **endpoint}
    deliverers = [] if send is None else [Deliverer(send, Endpoint.model_validate(config))]
    letters, policy = DeadLetters(sink, DLQ), BackoffPolicy(max_restarts=0)
    flow = Flow(settings, source, store, letters, deliverers, ForwarderMetrics(), policy)
    return Rig(flow, source, store, sink)


@contextlib.asynccontextmanager
async def running(rig: Rig) -> AsyncIterator[None]:
    """Run the flow as a task; on leaving, set ``stop`` and wait (bounded) for it to close the source."""
    stop = asyncio.Event()
    task = asyncio.create_task(rig.flow.run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    assert rig.source.closed


async def test_a_backlog_for_the_projector_pauses_exactly_the_waiting_batches_partitions() -> None:
    """While the store is held, batches pile up; at four waiting, their partitions (and only those) are
    paused, and once the store catches up they are resumed."""
    assert _PROJECTOR_QUEUE == 4
    gate = asyncio.Event()
    r = rig(batch_max=1, store=MemoryStore(gate))  # batch_max=1: no two batches merge while waiting
    batches = [batch(consumed(p, 0, created(p, f"room{p}"))) for p in range(4)]
    async with running(r):
        r.source.push(*batches[:3])
        await until(lambda: r.source.queued() == 0, "three batches consumed")
        await r.source.turns()
        assert r.source.pauses == []  # three waiting is no backlog yet
        r.source.push(batches[3])
        await until(lambda: r.source.pauses == [{0, 1, 2, 3}], "the four partitions paused")
        await r.source.turns()
        assert (r.source.resumes, r.store.applied, r.source.commits) == ([], [], [])
        gate.set()
        await until(lambda: r.source.resumes == [{0, 1, 2, 3}], "the four partitions resumed")
        await until(lambda: r.source.committed() == {0: 1, 1: 1, 2: 1, 3: 1}, "all four committed")
    assert r.source.pauses == [{0, 1, 2, 3}]
    assert [[record.partition for record in records] for records in r.store.applied] == [[0], [1], [2], [3]]


async def test_a_full_endpoint_pauses_the_partitions_feeding_it_until_it_drains_to_half() -> None:
    """An endpoint holding ``buffer`` events pauses the partitions that feed it, not others; one event
    out is not enough, half the buffer out resumes them."""
    send = GatedSend()
    r = rig(send, buffer=4)
    a, b, c, d = (created(n, f"room{n}") for n in range(4))
    stray = MessageUpdated(UUID(int=9), "room9", UUID(int=9), "ann", "edit", T0)  # no such message: rejected
    async with running(r):
        r.source.push(
            batch(
                consumed(0, 0, a),
                consumed(0, 1, b),
                consumed(1, 0, c),
                consumed(1, 1, d),
                consumed(2, 0, stray),
            )
        )
        await until(lambda: r.source.pauses == [{0, 1}], "the feeding partitions paused")
        assert r.source.commits == [{2: 1}]  # the rejected edit goes nowhere: nothing holds partition 2
        assert r.flow.dispatchers["e"].size == 4
        send.release(a)
        await until(lambda: send.answered == [eid(a)], "one event delivered")
        await r.source.turns()
        assert r.source.resumes == []  # 3 of 4 still buffered
        send.release(c)
        await until(lambda: r.source.resumes == [{0, 1}], "resumed once drained to half")
        send.release(b, d)
        await until(lambda: r.source.committed() == {0: 2, 1: 2, 2: 1}, "everything committed")
    assert (r.source.pauses, r.source.resumes) == ([{0, 1}], [{0, 1}])
    assert sorted(send.calls) == sorted(map(eid, (a, b, c, d)))


async def test_a_revoke_drops_the_partitions_work_and_answers_only_its_finished_offsets() -> None:
    """Revoking partition 0 mid-delivery answers its finished offset only; its event in flight never
    lands and it is committed no more, while partition 1's events still go out."""
    send = GatedSend()
    r = rig(send)
    a0, a1, b0, c1 = created(0, "a"), created(1, "a"), created(2, "b"), created(3, "c")
    async with running(r):
        r.source.push(batch(consumed(0, 0, a0), consumed(0, 1, a1), consumed(1, 0, b0), consumed(1, 1, c1)))
        send.release(a0, b0)
        await until(lambda: r.source.committed() == {0: 1, 1: 1}, "the first of each partition committed")
        await until(lambda: eid(a1) in send.calls and eid(c1) in send.calls, "the second ones in flight")
        revoked_at = len(r.source.commits)
        assert await r.source.revoke([0]) == {0: 1}
        dispatcher = r.flow.dispatchers["e"]
        assert (dispatcher.feeding_partitions(), dispatcher.size) == ({1}, 1)
        send.release(a1, c1)
        await until(lambda: eid(c1) in send.answered, "partition 1's event delivered")
        await r.source.turns()
    assert sorted(send.answered) == sorted(map(eid, (a0, b0, c1)))
    assert [commit for commit in r.source.commits[revoked_at:] if 0 in commit] == []


async def test_a_lost_partition_answers_nothing_to_commit() -> None:
    """Lost partitions may already belong to another member: the handler answers no offsets."""
    send = GatedSend()
    r = rig(send)
    event = created(0, "a")
    async with running(r):
        r.source.push(batch(consumed(0, 0, event)))
        send.release(event)
        await until(lambda: r.source.committed() == {0: 1}, "committed")
        assert await r.source.revoke([0], lost=True) == {}


async def test_commits_follow_arrival_order_not_completion_order() -> None:
    """In one partition, a later room's event finishing first does not move the commit past an earlier
    unfinished one; once that one finishes, the commit moves past both."""
    send = GatedSend()
    r = rig(send)
    first, slow, quick = created(0, "a"), created(1, "b"), created(2, "c")
    async with running(r):
        r.source.push(batch(consumed(0, 0, first), consumed(0, 1, slow), consumed(0, 2, quick)))
        send.release(first)
        await until(lambda: r.source.commits == [{0: 1}], "offset 0 committed")
        send.release(quick)
        await until(lambda: eid(quick) in send.answered, "the later event delivered")
        await r.source.turns()
        assert r.source.commits == [{0: 1}]
        send.release(slow)
        await until(lambda: r.source.commits == [{0: 1}, {0: 3}], "committed past both")
    assert r.source.commits == [{0: 1}, {0: 3}, {0: 3}]  # the last as the flow stops
    assert send.answered == [eid(first), eid(quick), eid(slow)]


async def test_a_poison_record_is_dead_lettered_before_the_commit_passes_it() -> None:
    """A record that is no event goes to the dead-letter topic untouched, with why and where in its
    headers; the good records around it are projected, and only once the dead letter is acknowledged
    does the commit move past it."""
    ack = asyncio.Event()
    r = rig(sink=Sink(ack))
    good0, good2 = created(0, "a"), created(2, "b")
    bad = poison(0, 1, b"{nope", extra=(("trace", b"t-1"),))
    assert bad.malformed is not None
    assert bad.malformed.startswith("not JSON: ")
    async with running(r):
        r.source.push(batch(consumed(0, 0, good0), bad, consumed(0, 2, good2)))
        await until(lambda: len(r.sink.sent) == 1, "the dead letter sent")
        await r.source.turns()
        assert (r.store.applied, r.source.commits) == ([], [])
        ack.set()
        await until(lambda: r.source.committed() == {0: 3}, "committed past the poison record")
    assert r.sink.sent == [
        Sent(DLQ, b"{nope", b"k", [
            ("trace", b"t-1"),
            ("merlin.dlq.stage", b"decode"),
            ("merlin.dlq.reason", bad.malformed.encode()),
            ("merlin.dlq.topic", TOPIC.encode()),
            ("merlin.dlq.partition", b"0"),
            ("merlin.dlq.offset", b"1"),
        ])
    ]  # fmt: skip
    assert [[(rec.offset, rec.event) for rec in records] for records in r.store.applied] == [
        [(0, good0), (1, None), (2, good2)]
    ]
    assert set(r.store.snapshot.messages) == {("a", good0.message_id), ("b", good2.message_id)}
    assert r.store.snapshot.positions == {0: 2}
    assert r.flow.metrics.registry.get_sample_value("merlin_dead_letters_total", {"stage": "decode"}) == 1


async def test_a_delivery_that_fails_for_good_is_dead_lettered_and_its_offset_committed() -> None:
    """An endpoint that refuses an event: a JSON dead letter with the event, the endpoint, the reason
    and the attempts, keyed by room; the record then counts as finished."""
    send = Scripted([400])
    r = rig(send)
    event = created(0, "a")
    async with running(r):
        r.source.push(batch(consumed(0, 0, event)))
        await until(lambda: r.source.committed() == {0: 1}, "committed past the failed delivery")
    [letter] = r.sink.sent
    assert (letter.topic, letter.key, len(send.seen)) == (DLQ, b"a", 1)
    document = orjson.loads(letter.value or b"")
    assert document.pop("event") == orjson.loads(encode(event))
    assert [(a["status"], a["error"]) for a in document.pop("attempts")] == [(400, None)]
    assert document == {"endpoint": {"name": "e", "url": "http://x.test/"}, "reason": "refused with 400"}
    assert letter.headers == [
        ("merlin.dlq.stage", b"delivery"),
        ("merlin.dlq.reason", b"refused with 400"),
        ("merlin.dlq.endpoint", b"e"),
        ("merlin.dlq.partition", b"0"),
        ("merlin.dlq.offset", b"0"),
        ("event_id", eid(event).encode()),
    ]
    assert r.flow.metrics.registry.get_sample_value("merlin_dead_letters_total", {"stage": "delivery"}) == 1
