"""``merlin_endpoint_oldest_undelivered_age_seconds``: the age of the oldest event an endpoint has taken in
and not finished, computed when scraped from the flow's books."""

from __future__ import annotations

import dataclasses
import time

from forwarder.metrics import ForwarderMetrics
from forwarder.source import Consumed
from forwarder.tracker import OffsetTracker
from tests.unit.fakes import GatedSend, batch, consumed, until
from tests.unit.scripted import Scripted
from tests.unit.test_roles import Endpointed, created, endpoint_flow, running

AGE = "merlin_endpoint_oldest_undelivered_age_seconds"


def written(record: Consumed, seconds_ago: float) -> Consumed:
    """``record`` as if written ``seconds_ago``."""
    return record._replace(message=dataclasses.replace(record.message, written=time.time() - seconds_ago))  # type: ignore[type-var]


def age(e: Endpointed) -> float | None:
    return e.sample(AGE, endpoint="e")


def test_the_oldest_is_the_earliest_first_unfinished_record_of_any_partition() -> None:
    tracker = OffsetTracker()
    assert tracker.oldest() is None
    tracker.add(0, 10, 1, written=100.0)
    tracker.add(0, 11, 1, written=90.0)  # written earlier, but behind offset 10 in its partition
    tracker.add(1, 3, 1, written=120.0)
    tracker.add(1, 4, 0, written=50.0)  # nothing waits for it
    assert tracker.oldest() == 100.0
    tracker.done(0, 10)
    assert tracker.oldest() == 90.0
    tracker.done(0, 11)
    assert tracker.oldest() == 120.0
    tracker.forget([1])
    assert tracker.oldest() is None


def test_an_endpoint_with_nothing_pending_is_at_zero_and_a_gone_one_has_no_series() -> None:
    metrics = ForwarderMetrics()
    metrics.undelivered.watch("e", OffsetTracker())
    assert metrics.registry.get_sample_value(AGE, {"endpoint": "e"}) == 0
    metrics.undelivered.forget("e")
    assert metrics.registry.get_sample_value(AGE, {"endpoint": "e"}) is None


async def test_the_age_is_the_oldest_events_until_it_is_delivered() -> None:
    send = GatedSend()
    e = endpoint_flow(send)
    e.metrics.undelivered.watch("e", e.role.ledger.tracker)
    a0, b0 = created(0), created(1, "b")
    records = [written(consumed(0, 0, a0), 30), written(consumed(0, 1, b0), 5)]
    async with running(e.flow):
        await e.store.apply([c.record for c in records])
        e.source.push(batch(*records))
        await until(lambda: len(send.calls) == 2, "both sent")
        assert 30 <= (age(e) or 0) < 40
        send.release(a0)
        await until(lambda: e.source.committed() == {0: 1}, "a0 delivered")
        assert 5 <= (age(e) or 0) < 15  # b0's, now the oldest pending
        send.release(b0)
        await until(lambda: e.source.committed() == {0: 2}, "b0 delivered")
        assert age(e) == 0


async def test_a_blocked_rooms_head_keeps_the_age_growing() -> None:
    e = endpoint_flow(Scripted([400]), on_failure="block")
    e.metrics.undelivered.watch("e", e.role.ledger.tracker)
    a0, b0 = created(0), created(1, "b")
    records = [written(consumed(0, 0, a0), 60), written(consumed(0, 1, b0), 1)]
    async with running(e.flow):
        await e.store.apply([c.record for c in records])
        e.source.push(batch(*records))
        await until(lambda: ("finished", "e", str(b0.event_id)) in e.heard.said, "room b delivered")
        assert set(e.role.dispatcher.blocked_rooms()) == {"a"}
        assert (age(e) or 0) >= 60  # room a's head, blocked: nothing new arrives, lag says nothing
