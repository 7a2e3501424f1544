"""How a merlin process sets Python's garbage collector once start-up is done.

Two things, both about the collector walking objects that are not garbage:

- What start-up built (modules, apps, models: about 140,000 objects) is frozen
  out of every later collection. The oldest generation's collections walked all
  of it: pauses of 80-110 ms that stalled the event loop.
- The generations' thresholds are raised. A forwarder holds its batches in flight
  (up to 5,000 records each, several batches deep, about six tracked objects per
  record: the consumer's message, the record, the event, its ids). With the
  default thresholds (700, 10, 10), young collections every few dozen events
  promoted them, and the oldest generation was collected every 8,000 events or
  so, walking 90,000-120,000 of them each time: 3.5 s of a 10 s projection
  run, or 1.1 s with the start-up heap frozen. With these thresholds a young
  collection comes every thousand events or so and a full one about every
  million: none in that run, and a few per minute at full speed.

Cyclic garbage that outlives two young collections waits longer to be freed.
There is little: a projection of 200,000 events leaves about 2,000 objects to
the collector, none of them per event (reference counting frees those).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

# Collect the young generation after 10,000 net allocations of tracked objects (700 by default),
# the middle one every 50 young collections (10), the oldest every 20 middle ones (10).
THRESHOLDS: Final = (10_000, 50, 20)


def settle_heap() -> None:
    """Freeze what start-up built out of the collector, and raise its thresholds (once, after start-up)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)


@contextmanager
def settled_heap() -> Iterator[None]:
    """The heap as a service process sets it (``settle_heap``), undone on exit: for in-process runs."""
    before = gc.get_threshold()
    settle_heap()
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
