"""A flow's books, kept by its intake and its role together: what is finished, and whose turn it is.

The offset tracker says how far each partition may be committed: up to the
first record not finished, in arrival order. Each revocation starts a new
generation: work tagged with a generation older than its partition's last
revocation belongs to an earlier owner's turn, and changes nothing.
"""

from __future__ import annotations

from forwarder.source import Consumed
from forwarder.tracker import OffsetTracker


class Ledger:
    """One run of a flow's books."""

    def __init__(self) -> None:
        self.tracker = OffsetTracker()
        self.generation = 0
        self._reset_at: dict[int, int] = {}  # partition -> the generation its last revocation started

    def revoke(self, partitions: list[int]) -> dict[int, int]:
        """Start a generation without ``partitions`` and forget them; their finished offsets, to commit."""
        self.generation += 1
        gone = set(partitions)
        for partition in gone:
            self._reset_at[partition] = self.generation
        finished = {p: o for p, o in self.tracker.committable().items() if p in gone}
        self.tracker.forget(partitions)
        return finished

    def current(self, partition: int, generation: int) -> bool:
        """Whether work of ``generation`` on ``partition`` still belongs to this flow."""
        return generation >= self._reset_at.get(partition, 0)

    def still_mine(self, consumed: list[Consumed], generation: int) -> list[Consumed]:
        """``consumed`` less the records of partitions revoked since ``generation``."""
        gone = {p for p, reset in self._reset_at.items() if reset > generation}
        return [c for c in consumed if c.record.partition not in gone] if gone else consumed

    def finish(self, partition: int, offset: int, generation: int) -> None:
        """One stage finished the record at ``offset``, taken in ``generation``."""
        if generation >= self._reset_at.get(partition, 0):  # ``current``, inline: once per delivered event
            self.tracker.done(partition, offset)
