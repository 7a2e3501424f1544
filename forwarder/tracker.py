"""Which offsets may be committed: only up to the first record not finished everywhere, in arrival order."""

from __future__ import annotations

from collections import OrderedDict


class OffsetTracker:
    """Per partition, the records not finished yet and how many stages each still waits for.

    Only unfinished records are kept (in arrival order, which is offset order), so a
    record held for long, such as a blocked room's, costs its own entry and nothing
    for the finished records behind it. Each keeps the time its record was written
    (Kafka's timestamp), if given: the oldest unfinished one's is each partition's
    first (``oldest``), found when asked, at no cost per record.
    """

    def __init__(self) -> None:
        # partition -> offset -> (stages still waiting, when the record was written or None)
        self._pending: dict[int, OrderedDict[int, tuple[int, float | None]]] = {}
        self._first: dict[int, int] = {}  # partition -> first offset tracked: nothing to commit before
        self._end: dict[int, int] = {}  # partition -> one past the last offset tracked

    def add(self, partition: int, offset: int, waiting: int, written: float | None = None) -> None:
        """Track a record that ``waiting`` stages (endpoints) still have to finish, written at
        ``written`` (Unix time)."""
        self._first.setdefault(partition, offset)
        self._end[partition] = offset + 1
        if waiting > 0:
            self._pending.setdefault(partition, OrderedDict())[offset] = (waiting, written)

    def done(self, partition: int, offset: int) -> None:
        """One stage finished the record at ``offset``."""
        pending = self._pending.get(partition)
        if pending is None:
            return
        entry = pending.get(offset)
        if entry is None:
            return
        if entry[0] <= 1:
            del pending[offset]
        else:
            pending[offset] = (entry[0] - 1, entry[1])

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

    def oldest(self) -> float | None:
        """When the oldest record not finished yet was written (the earliest of each partition's first
        unfinished record), or None when none is pending (or none pending has a time)."""
        found: float | None = None
        for pending in self._pending.values():
            if pending:
                written = next(iter(pending.values()))[1]
                if written is not None and (found is None or written < found):
                    found = written
        return found

    def forget(self, partitions: list[int]) -> None:
        """Drop what is tracked for ``partitions`` (they were revoked)."""
        for partition in partitions:
            self._pending.pop(partition, None)
            self._first.pop(partition, None)
            self._end.pop(partition, None)
