"""The forwarder's flows end to end without a broker: back-pressure, rebalances, commit order, dead letters.

Each test runs the projection's flow and, with an endpoint, the endpoint's flow over the same log,
as tasks over in-memory fakes (``tests.unit.fakes``): a scripted source, a store that applies the
real projection rules, a dead-letter sink and an endpoint whose answers the test releases one event
at a time. Waits are bounded and wait for a condition, never for time to pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import orjson
import pytest

from domain import Event, MessageCreated, MessageUpdated, encode, headers
from forwarder.applied import AppliedGate
from forwarder.delivering import Delivering
from forwarder.dispatcher import Dispatcher
from forwarder.intake import _WAITING_BATCHES, Intake
from forwarder.ledger import Ledger
from forwarder.metrics import ForwarderMetrics
from forwarder.projecting import DeadLetteredPoison, Projecting
from forwarder.settings import ForwarderSettings
from forwarder.source import Batch, Consumed
from forwarder.supervisor import BackoffPolicy
from read_store.projection import STORE_REFUSED, Changes, Record
from read_store.writer import StoreRefused
from tests.unit.fakes import (
    TOPIC,
    FakeSource,
    GatedSend,
    MemoryReads,
    MemoryStore,
    Sent,
    Sink,
    Unwatched,
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
DLQ = "merlin.dead-letters"
T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)


def created(n: int, room: str) -> MessageCreated:
    return MessageCreated(UUID(int=n), room, UUID(int=n), "ann", f"message {n}", T0)


def eid(event: Event) -> str:
    return str(event.event_id)


class SharedLog(FakeSource):
    """Endpoint "e"'s source; what the test pushes to it reaches the projection's source too: one log,
    read by two groups."""

    def __init__(self, projection: FakeSource) -> None:
        super().__init__()
        self.projection = projection

    def push(self, *batches: Batch) -> None:
        self.projection.push(*batches)
        super().push(*batches)


@dataclass
class Rig:
    flow: Intake  # endpoint "e"'s flow when there is one, else the projection's
    source: FakeSource  # ``flow``'s source
    store: MemoryStore
    sink: Sink
    flows: list[Intake]  # every flow the rig runs
    delivering: Delivering | None = None

    @property
    def dispatcher(self) -> Dispatcher:
        assert self.delivering is not None, "the rig has no endpoint"
        return self.delivering.dispatcher


def rig(
    send: Send | None = None,
    *,
    batch_max: int = 100,
    store: MemoryStore | None = None,
    sink: Sink | None = None,
    policy: BackoffPolicy | None = None,
    projection_apart: bool = False,
    backlog_pause_after: float = 0.0,
    **endpoint: object,
) -> Rig:
    """The projection's flow over fakes and, given ``send``, endpoint "e"'s flow over the same log,
    served by ``send`` and delivering what the projection applied.

    The flows share the dead-letter sink and the metrics, as a worker's do; with
    ``projection_apart``, the projection's go elsewhere, as if it ran in another worker. Unless
    ``policy`` says otherwise, a stage that crashes is not restarted: it fails its flow, and so the
    test.
    """
    store, sink = store or MemoryStore(), sink or Sink()
    settings = ForwarderSettings(
        batch_max=batch_max, poll_timeout=0.01, backlog_pause_after=backlog_pause_after
    )
    letters, metrics, policy = (
        DeadLetters(sink, DLQ),
        ForwarderMetrics(),
        policy or BackoffPolicy(max_restarts=0),
    )
    projected = FakeSource()
    # Apart, the projection dead-letters and counts where the test does not look.
    apart = (DeadLetters(Sink(), DLQ), ForwarderMetrics()) if projection_apart else (letters, metrics)
    projection = projection_flow(settings, projected, store, *apart, policy)
    if send is None:
        return Rig(projection, projected, store, sink, [projection])
    config = {"name": "e", "url": "http://x.test/", "secret": SECRET, **endpoint}
    deliverer = Deliverer(send, Endpoint.model_validate(config))
    source, ledger = SharedLog(projected), Ledger()
    delivering = Delivering(
        "endpoint:e", deliverer, AppliedGate(MemoryReads(store)), ledger, letters, metrics, Unwatched()
    )
    flow = Intake("endpoint:e", settings, source, delivering, ledger, metrics, policy)
    return Rig(flow, source, store, sink, [projection, flow], delivering)


def projection_flow(
    settings: ForwarderSettings,
    source: FakeSource,
    store: MemoryStore,
    letters: DeadLetters,
    metrics: ForwarderMetrics,
    policy: BackoffPolicy,
) -> Intake:
    ledger = Ledger()
    projecting = Projecting(
        "projection", store, letters, DeadLetteredPoison(letters, metrics), ledger, metrics
    )
    return Intake("projection", settings, source, projecting, ledger, metrics, policy)


@contextlib.asynccontextmanager
async def running(rig: Rig) -> AsyncIterator[None]:
    """Run the flows as tasks; on leaving, set ``stop`` and wait (bounded) for them to close their sources."""
    stop = asyncio.Event()
    tasks = [asyncio.create_task(flow.run(stop)) for flow in rig.flows]
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert rig.source.closed


async def test_a_backlog_for_the_projector_pauses_exactly_the_waiting_batches_partitions() -> None:
    """While the store is held, batches pile up; at four waiting (for backlog_pause_after, here 0),
    their partitions (and only those) are paused, and once the store catches up they are resumed."""
    assert _WAITING_BATCHES == 4
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


async def test_a_projector_busy_for_less_than_backlog_pause_after_is_waited_for_not_paused() -> None:
    """With four batches waiting, the consumer fetches nothing more until the projector takes one,
    and pauses nothing: a pause would drop what librdkafka has fetched ahead."""
    gate = asyncio.Event()
    r = rig(batch_max=1, store=MemoryStore(gate), backlog_pause_after=30)
    applied_when_fetched: list[int] = []
    fetch = r.source.batch

    async def counting(max_records: int, timeout: float) -> Batch:
        got = await fetch(max_records, timeout)
        if got.records:
            applied_when_fetched.append(len(r.store.applied))
        return got

    r.source.batch = counting  # type: ignore[method-assign]
    async with running(r):
        r.source.push(*(batch(consumed(p, 0, created(p, f"room{p}"))) for p in range(5)))
        await until(lambda: r.source.queued() == 1, "four batches consumed, the fifth left")
        gate.set()
        await until(lambda: len(r.store.applied) == 5, "all five applied")
    assert applied_when_fetched[:4] == [0, 0, 0, 0]
    assert applied_when_fetched[4] >= 1  # fetched only once the projector took a batch
    assert r.source.pauses == []


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
        assert r.dispatcher.size == 4
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
        dispatcher = r.dispatcher
        assert (dispatcher.feeding_partitions(), dispatcher.size) == ({1}, 1)
        send.release(a1, c1)
        await until(lambda: eid(c1) in send.answered, "partition 1's event delivered")
        # The partition kept goes on: its event from before the revocation is committed.
        await until(lambda: (r.source.committed() or {}).get(1) == 2, "partition 1 committed past c1")
        await r.source.turns()
    assert sorted(send.answered) == sorted(map(eid, (a0, b0, c1)))
    assert [commit for commit in r.source.commits[revoked_at:] if 0 in commit] == []


async def test_a_revoke_leaves_the_kept_partitions_queued_records_to_be_projected() -> None:
    """Cooperative rebalancing takes one partition: batches waiting for the projector keep the others'."""
    gate = asyncio.Event()
    r = rig(store=MemoryStore(gate=gate))
    first, a0, b1, a1 = created(0, "x"), created(1, "a"), created(2, "b"), created(3, "a")
    async with running(r):
        r.source.push(batch(consumed(1, 0, first)))
        await until(lambda: r.source.queued() == 0, "the head batch taken")
        r.source.push(batch(consumed(0, 0, a0), consumed(1, 1, b1)), batch(consumed(0, 1, a1)))
        await r.source.turns(3)
        assert await r.source.revoke([0]) == {}
        gate.set()
        await until(lambda: r.source.committed() == {1: 2}, "partition 1 projected and committed")
    projected = [record.offset for applied in r.store.applied for record in applied if record.partition == 0]
    assert projected == []
    assert b1.event_id in r.store.snapshot.seen_event_ids


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


async def test_a_flow_that_does_not_report_poison_skips_it_and_commits_past_it() -> None:
    """An endpoint's flow reads the same log as the projection, which dead-letters poison records:
    it sends no second dead letter, and its commit moves past the record."""
    r = rig(Scripted([]), projection_apart=True)
    good = created(0, "a")
    async with running(r):
        r.source.push(batch(consumed(0, 0, good), poison(0, 1, b"{nope")))
        await until(lambda: r.source.committed() == {0: 2}, "committed past the poison record")
    assert r.sink.sent == []
    assert r.flow.metrics.registry.get_sample_value("merlin_dead_letters_total", {"stage": "decode"}) is None


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


# -- records the read store refuses for good -------------------------------------------------------

REFUSAL = "the read store cannot keep this"  # what MemoryStore's StoreRefused says
UNSTORABLE = "nul \x00 inside"
# Restart a crashed stage at once, as often as it takes.
RESTART_AT_ONCE = BackoffPolicy(min_backoff=0.001, max_backoff=0.001, random_factor=0, max_restarts=None)


class RecordingStore(MemoryStore):
    """A MemoryStore that also keeps the changes of every apply that succeeded, in order."""

    def __init__(self, refuses: frozenset[str] = frozenset(), failures: Sequence[Exception] = ()) -> None:
        super().__init__(refuses=refuses, failures=failures)
        self.changes: list[Changes] = []

    async def apply(
        self, records: Sequence[Record], refused: Mapping[tuple[int, int], str] | None = None
    ) -> Changes:
        changes = await super().apply(records, refused)
        self.changes.append(changes)
        return changes

    def outcomes(self) -> list[tuple[int, int, str, str | None, str | None]]:
        return [(o.partition, o.offset, o.status, o.code, o.reason) for c in self.changes for o in c.outcomes]

    def applied_at(self) -> list[tuple[int, int]]:
        """Where every record applied (once its apply succeeded) is, in the order the store took them."""
        return [(record.partition, record.offset) for records in self.applied for record in records]


def unstorable(n: int, room: str) -> MessageCreated:
    return MessageCreated(UUID(int=n), room, UUID(int=n), "ann", UNSTORABLE, T0)


def at(records: Sequence[Consumed]) -> list[tuple[int, int]]:
    return [(c.record.partition, c.record.offset) for c in records]


def store_letter(event: Event, partition: int, offset: int) -> Sent:
    """The dead letter of a record the store refused: the record untouched, with why and where."""
    return Sent(DLQ, encode(event), event.room_id.encode(), [
        *headers(event),
        ("merlin.dlq.stage", b"store"),
        ("merlin.dlq.reason", REFUSAL.encode()),
        ("merlin.dlq.topic", TOPIC.encode()),
        ("merlin.dlq.partition", str(partition).encode()),
        ("merlin.dlq.offset", str(offset).encode()),
    ])  # fmt: skip


def dead_letters(r: Rig, stage: str) -> float | None:
    return r.flow.metrics.registry.get_sample_value("merlin_dead_letters_total", {"stage": stage})


async def test_a_record_the_store_refuses_is_dead_lettered_and_the_rest_of_its_batch_applied() -> None:
    """One refused record among seven, in two partitions: it alone goes to the dead-letter topic and is
    recorded as store_refused (taking no seq); the six others are applied once each, in log order; the
    commit passes every offset; and isolating it takes a logarithmic number of applies, not one each."""
    store = RecordingStore(refuses=frozenset({UNSTORABLE}))
    r = rig(store=store)
    a0, b0, a1, bad, a2, b2, a3 = (
        created(0, "a"), created(1, "b"), created(2, "a"), unstorable(3, "b"),
        created(4, "a"), created(5, "b"), created(6, "a"),
    )  # fmt: skip
    records = [
        consumed(0, 0, a0), consumed(1, 0, b0), consumed(0, 1, a1), consumed(1, 1, bad),
        consumed(0, 2, a2), consumed(1, 2, b2), consumed(0, 3, a3),
    ]  # fmt: skip
    async with running(r):
        r.source.push(batch(*records))
        await until(lambda: r.source.committed() == {0: 4, 1: 3}, "committed past the whole batch")
    assert r.sink.sent == [store_letter(bad, 1, 1)]
    assert dead_letters(r, "store") == 1
    assert dead_letters(r, "decode") is None
    assert store.applied_at() == at(records)  # each once, in log order (the refused one alone)
    assert [(1, 1)] in [[(x.partition, x.offset) for x in xs] for xs in store.applied]
    assert store.outcomes() == [
        (0, 0, "applied", None, None),
        (1, 0, "applied", None, None),
        (0, 1, "applied", None, None),
        (1, 1, "rejected", STORE_REFUSED, REFUSAL),
        (0, 2, "applied", None, None),
        (1, 2, "applied", None, None),
        (0, 3, "applied", None, None),
    ]
    seqs = {key: projected.seq for key, projected in store.snapshot.messages.items()}
    assert seqs == {
        ("a", a0.message_id): 1, ("a", a1.message_id): 2, ("a", a2.message_id): 3, ("a", a3.message_id): 4,
        ("b", b0.message_id): 1, ("b", b2.message_id): 2,
    }  # fmt: skip
    assert store.snapshot.positions == {0: 3, 1: 2}
    assert store.snapshot.seen_event_ids[bad.event_id] is False
    # Halving finds it in 2 applies per level (plus the whole batch, plus it alone, refused): not one each.
    assert len(store.attempts) <= 2 * math.ceil(math.log2(len(records))) + 2
    samples = {s: r.flow.metrics.registry.get_sample_value("merlin_projection_events_total", {"status": s})
               for s in ("applied", "rejected")}  # fmt: skip
    assert samples == {"applied": 6, "rejected": 1}


@pytest.mark.parametrize("refused", [(1, 5), (3, 4), (0, 6)], ids=["apart", "adjacent", "first-and-last"])
async def test_every_record_the_store_refuses_in_a_batch_is_dead_lettered_in_log_order(
    refused: tuple[int, int],
) -> None:
    """Two refused records in one batch of seven: both dead-lettered, in log order, both recorded as
    store_refused; the other five applied once each, in log order; the commit passes all."""
    store = RecordingStore(refuses=frozenset({UNSTORABLE}))
    r = rig(store=store)
    events = [unstorable(n, "a") if n in refused else created(n, "a") for n in range(7)]
    records = [consumed(0, n, event) for n, event in enumerate(events)]
    async with running(r):
        r.source.push(batch(*records))
        await until(lambda: r.source.committed() == {0: 7}, "committed past the whole batch")
    assert r.sink.sent == [store_letter(events[n], 0, n) for n in refused]
    assert dead_letters(r, "store") == 2
    assert store.applied_at() == at(records)
    assert store.outcomes() == [
        (0, n, "rejected", STORE_REFUSED, REFUSAL) if n in refused else (0, n, "applied", None, None)
        for n in range(7)
    ]
    good = [event for n, event in enumerate(events) if n not in refused]
    assert {key: p.seq for key, p in store.snapshot.messages.items()} == {
        ("a", event.message_id): seq for seq, event in enumerate(good, 1)
    }
    assert store.snapshot.positions == {0: 6}


async def test_a_store_error_a_retry_may_cure_retries_the_batch_and_dead_letters_nothing() -> None:
    """A lost connection is no refusal: the projector crashes, is restarted, and the same batch is tried
    again until it applies, once; nothing is dead-lettered and the commit passes the batch."""
    store = RecordingStore(failures=[ConnectionError("lost"), ConnectionError("lost")])
    r = rig(store=store, policy=RESTART_AT_ONCE)
    records = [
        consumed(0, 0, created(0, "a")),
        consumed(0, 1, created(1, "b")),
        consumed(1, 0, created(2, "a")),
    ]
    async with running(r):
        r.source.push(batch(*records))
        await until(lambda: r.source.committed() == {0: 2, 1: 1}, "committed past the batch")
    whole = [c.record for c in records]
    assert store.attempts == [whole, whole, whole]
    assert store.applied == [whole]
    assert store.outcomes() == [
        (0, 0, "applied", None, None),
        (0, 1, "applied", None, None),
        (1, 0, "applied", None, None),
    ]
    assert r.sink.sent == []
    assert dead_letters(r, "store") is None
    restarts = r.flow.metrics.registry.get_sample_value(
        "merlin_forwarder_stage_restarts_total", {"stage": "projector"}
    )
    assert restarts == 2


async def test_a_transient_error_after_the_dead_letter_retries_the_batch_without_applying_twice() -> None:
    """The store loses its connection while recording the refused record (its dead letter already sent):
    the batch is retried from the start; what applied before is replayed, not applied again; the record
    is dead-lettered once (the flow remembers it) and recorded as store_refused once."""
    store = RecordingStore(refuses=frozenset({UNSTORABLE}))
    r = rig(store=store, policy=RESTART_AT_ONCE)
    events = [created(0, "a"), created(1, "a"), unstorable(2, "a"), created(3, "a")]
    records = [consumed(0, n, event) for n, event in enumerate(events)]
    original, lost = store.apply, [ConnectionError("lost")]

    async def flaky(
        records: Sequence[Record], refused: Mapping[tuple[int, int], str] | None = None
    ) -> Changes:
        if refused and lost:
            raise lost.pop()
        return await original(records, refused)

    store.apply = flaky  # type: ignore[method-assign]
    async with running(r):
        r.source.push(batch(*records))
        await until(lambda: r.source.committed() == {0: 4}, "committed past the batch")
    assert r.sink.sent == [store_letter(events[2], 0, 2)]
    assert dead_letters(r, "store") == 1
    assert store.outcomes() == [
        (0, 0, "applied", None, None),
        (0, 1, "applied", None, None),
        (0, 2, "rejected", STORE_REFUSED, REFUSAL),
        (0, 3, "applied", None, None),
    ]
    assert sum(c.replayed for c in store.changes) == 2  # the first two, met again on the retry
    assert {key: p.seq for key, p in store.snapshot.messages.items()} == {
        ("a", events[0].message_id): 1, ("a", events[1].message_id): 2, ("a", events[3].message_id): 3,
    }  # fmt: skip


async def test_a_record_the_store_refused_is_never_delivered_and_the_others_are() -> None:
    """With an endpoint: the refused record's event goes nowhere downstream (it is not in the store);
    the others are delivered, in order per room, and the commit passes all of them."""
    send = Scripted([])
    store = RecordingStore(refuses=frozenset({UNSTORABLE}))
    r = rig(send, store=store)
    a0, b0, bad, a1, b1 = (
        created(0, "a"),
        created(1, "b"),
        unstorable(2, "a"),
        created(3, "a"),
        created(4, "b"),
    )
    records = [
        consumed(0, 0, a0),
        consumed(1, 0, b0),
        consumed(0, 1, bad),
        consumed(0, 2, a1),
        consumed(1, 1, b1),
    ]
    async with running(r):
        r.source.push(batch(*records))
        await until(lambda: r.source.committed() == {0: 3, 1: 2}, "committed past the whole batch")
    delivered = [call.headers["webhook-id"] for call in send.seen]
    assert sorted(delivered) == sorted(map(eid, (a0, b0, a1, b1)))
    assert [d for d in delivered if d in (eid(a0), eid(a1))] == [eid(a0), eid(a1)]
    assert [d for d in delivered if d in (eid(b0), eid(b1))] == [eid(b0), eid(b1)]
    assert r.sink.sent == [store_letter(bad, 0, 1)]
    deliveries = r.flow.metrics.registry.get_sample_value(
        "merlin_deliveries_total", {"endpoint": "e", "outcome": "delivered"}
    )
    assert deliveries == 4


async def test_a_store_that_refuses_even_the_rejection_retries_without_dead_lettering_again() -> None:
    """When recording the rejection is refused too, the record is not to blame: the projector crashes
    and retries with backoff, the record is dead-lettered once, and nothing is committed past it until
    the store takes the rejection."""

    class RefusesEverything(RecordingStore):
        refusing = True

        async def apply(
            self, records: Sequence[Record], refused: Mapping[tuple[int, int], str] | None = None
        ) -> Changes:
            if not self.refusing:
                return await super().apply(records, refused)
            self.attempts.append(list(records))
            raise StoreRefused(REFUSAL)

    store = RefusesEverything(refuses=frozenset({UNSTORABLE}))
    r = rig(store=store, policy=RESTART_AT_ONCE)
    event = unstorable(0, "a")
    async with running(r):
        r.source.push(batch(consumed(0, 0, event)))
        await until(lambda: len(store.attempts) >= 20, "ten rounds of refusal and retry")
        assert r.source.committed() in (None, {})
        store.refusing = False
        await until(lambda: r.source.committed() == {0: 1}, "committed once the store takes it")
    assert r.sink.sent == [store_letter(event, 0, 0)]
    assert dead_letters(r, "store") == 1
    assert store.outcomes() == [(0, 0, "rejected", STORE_REFUSED, REFUSAL)]
