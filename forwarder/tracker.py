"""Which offsets may be committed: only up to the first record not finished everywhere, in arrival order."""

from __future__ import annotations

from collections import OrderedDict


class OffsetTracker:
    """Per partition, the records not finished yet and how many stages each still waits for.

    Only unfinished records are kept (in arrival order, which is offset order), so a
    record held for long, such as a blocked room's, costs its own entry and nothing
    for the finished records behind it.
    """

    def __init__(self) -> None:
        self._pending: dict[int, OrderedDict[int, int]] = {}
        self._first: dict[int, int] = {}  # partition -> first offset tracked: nothing to commit before
        self._end: dict[int, int] = {}  # partition -> one past the last offset tracked

    def add(self, partition: int, offset: int, waiting: int) -> None:
        """Track a record that ``waiting`` stages (endpoints) still have to finish."""
        self._first.setdefault(partition, offset)
        self._end[partition] = offset + 1
        if waiting > 0:
            self._pending.setdefault(partition, OrderedDict())[offset] = waiting

    def done(self, partition: int, offset: int) -> None:
        """One stage finished the record at ``offset``."""
        pending = self._pending.get(partition)
        if pending is None or offset not in pending:
            return
        pending[offset] -= 1
        if pending[offset] <= 0:
            del pending[offset]

    def end(self, partition: int) -> int:
        """One past the last offset tracked in ``partition`` (0 if none)."""
        return self._end.get(partition, 0)

    def committable(self) -> dict[int, int]:
        """Per partition, the next offset to read once everything before it is finished."""
        found = {}
        for partition, first in self._first.items():
            pending = self._pending.get(partition)
            next_offset = next(iter(pending)) if pending else self._end[partition]
            if next_offset > first:
                found[partition] = next_offset
        return found

    def pending(self, partition: int | None = None) -> int:
        """Records not finished yet (in one partition, or in all)."""
        if partition is not None:
            return len(self._pending.get(partition, ()))
        return sum(len(p) for p in self._pending.values())

    def forget(self, partitions: list[int]) -> None:
        """Drop what is tracked for ``partitions`` (they were revoked)."""
        for partition in partitions:
            self._pending.pop(partition, None)
            self._first.pop(partition, None)
            self._end.pop(partition, None)
