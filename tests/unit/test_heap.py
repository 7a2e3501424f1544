"""A service's heap: start-up frozen out of the collector, thresholds raised; undone after in-process runs."""

from __future__ import annotations

import gc

from merlin.heap import THRESHOLDS, settled_heap


class _Built:
    """Something start-up made (tracked by the collector, as instances of classes are)."""


def test_settled_heap_freezes_what_was_built_and_raises_the_thresholds() -> None:
    before = gc.get_threshold()
    built = _Built()
    with settled_heap():
        assert gc.get_threshold() == THRESHOLDS
        assert gc.get_freeze_count() > 0
        # Frozen: in no generation a collection walks.
        assert not any(obj is built for obj in gc.get_objects())
        later = _Built()
        assert any(obj is later for obj in gc.get_objects())
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
    assert any(obj is built for obj in gc.get_objects())


def test_young_collections_wait_for_their_threshold() -> None:
    with settled_heap():
        gc.collect(0)
        young_collections = gc.get_stats()[0]["collections"]
        held: list[list[int]] = [[] for _ in range(THRESHOLDS[0] // 2)]
        # Thousands of allocations later, still no young collection (the default runs one per 700).
        # Counted by collections, not by gc.get_count(): another thread's frees lower that count.
        assert gc.get_stats()[0]["collections"] == young_collections
        assert len(held) > 700
