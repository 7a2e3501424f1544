"""Offsets are committed in arrival order, only past records every endpoint has finished."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from forwarder.tracker import OffsetTracker


def test_a_later_record_finishing_first_does_not_move_the_commit() -> None:
    tracker = OffsetTracker()
    for offset in (10, 11, 12):
        tracker.add(0, offset, waiting=1)
    tracker.done(0, 12)
    tracker.done(0, 11)
    assert tracker.committable() == {}
    tracker.done(0, 10)
    assert tracker.committable() == {0: 13}
    assert tracker.pending() == 0


def test_a_record_waits_for_every_endpoint() -> None:
    tracker = OffsetTracker()
    tracker.add(1, 5, waiting=2)
    tracker.done(1, 5)
    assert tracker.committable() == {}
    tracker.done(1, 5)
    assert tracker.committable() == {1: 6}


def test_records_no_endpoint_wants_commit_behind_pending_ones() -> None:
    tracker = OffsetTracker()
    tracker.add(0, 1, waiting=0)
    assert tracker.committable() == {0: 2}
    tracker.add(0, 2, waiting=1)
    tracker.add(0, 3, waiting=0)
    assert tracker.committable() == {0: 2}
    tracker.done(0, 2)
    assert tracker.committable() == {0: 4}


def test_forgotten_partitions_are_gone() -> None:
    tracker = OffsetTracker()
    tracker.add(0, 1, waiting=1)
    tracker.add(1, 1, waiting=0)
    tracker.forget([0, 1])
    tracker.done(0, 1)
    assert tracker.committable() == {}
    assert tracker.pending() == 0


@given(st.permutations(list(range(30))), st.integers(0, 30))
def test_the_commit_is_the_first_unfinished_offset(order: list[int], finished: int) -> None:
    tracker = OffsetTracker()
    for offset in range(30):
        tracker.add(0, offset, waiting=1)
    done = set(order[:finished])
    for offset in order[:finished]:
        tracker.done(0, offset)
    first_unfinished = next((offset for offset in range(30) if offset not in done), 30)
    assert tracker.committable().get(0, 0) == first_unfinished


def test_finished_records_behind_an_unfinished_one_cost_nothing() -> None:
    tracker = OffsetTracker()
    tracker.add(0, 0, waiting=1)  # say, a blocked room's head
    for offset in range(1, 10_001):
        tracker.add(0, offset, waiting=1)
        tracker.done(0, offset)
    assert tracker.pending() == 1
    assert tracker.committable() == {}
    tracker.done(0, 0)
    assert tracker.committable() == {0: 10_001}
