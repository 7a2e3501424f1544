"""Which offsets may be committed: only up to the last record finished everywhere, in arrival order."""

from __future__ import annotations

from collections import OrderedDict


class OffsetTracker:
    """Per partition, the records in flight and how many stages each still waits for."""

    def __init__(self) -> None:
        self._pending: dict[int, OrderedDict[int, int]] = {}
        self._next: dict[int, int] = {}  # partition -> offset to commit

    def add(self, partition: int, offset: int, waiting: int) -> None:
        """Track a record that ``waiting`` stages (endpoints) still have to finish."""
        pending = self._pending.setdefault(partition, OrderedDict())
        if waiting <= 0:
            if not pending:
                self._next[partition] = max(self._next.get(partition, 0), offset + 1)
                return
            waiting = 0
        pending[offset] = waiting
        self._advance(partition)

    def done(self, partition: int, offset: int) -> None:
        """One stage finished the record at ``offset``."""
        pending = self._pending.get(partition)
        if pending is None or offset not in pending:
            return
        pending[offset] -= 1
        self._advance(partition)

    def _advance(self, partition: int) -> None:
        pending = self._pending[partition]
        while pending:
            offset, waiting = next(iter(pending.items()))
            if waiting > 0:
                break
            pending.popitem(last=False)
            self._next[partition] = offset + 1

    def committable(self) -> dict[int, int]:
        """Per partition, the next offset to read once everything before it is finished."""
        return dict(self._next)

    def pending(self, partition: int | None = None) -> int:
        """Records not finished yet (in one partition, or in all)."""
        if partition is not None:
            return len(self._pending.get(partition, ()))
        return sum(len(p) for p in self._pending.values())

    def forget(self, partitions: list[int]) -> None:
        """Drop what is tracked for ``partitions`` (they were revoked)."""
        for partition in partitions:
            self._pending.pop(partition, None)
            self._next.pop(partition, None)
