"""The events topic's end offsets as the read API knows them, looked up again when a position passes them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

log = structlog.get_logger()

Ends = dict[int, int]


class LogEnds:
    """The end offset of each partition of the events topic, as the last lookup that answered saw it.

    Ends only grow, so a position below the known end needs no lookup at all. A
    position at or past it may have been written since, so it is judged by a
    lookup begun after it was asked: a write acknowledged before its reader sent
    the read is inside any such lookup. Everyone who asks before a lookup begins
    shares it, and one lookup runs at a time: however many ask, the broker sees
    one request after another, never a crowd.
    """

    def __init__(self, lookup: Callable[[], Awaitable[Ends | None]]) -> None:
        self._lookup = lookup
        self.known: Ends = {}
        # The partition count, once a lookup has said it: a topic's partitions are never taken away.
        self.partitions: int | None = None
        self.lookups = 0
        # What the next lookup will answer: it begins only after everyone holding it asked.
        self._next: asyncio.Future[Ends | None] | None = None
        self._runner: asyncio.Task[None] | None = None

    def end(self, partition: int) -> int | None:
        """The known end of ``partition`` (the offset the next write there will get), None if not known."""
        return self.known.get(partition)

    def refresh(self) -> asyncio.Future[Ends | None]:
        """A lookup begun after this call: its ends, or None when the broker did not answer."""
        if self._next is None:
            self._next = asyncio.get_running_loop().create_future()
        answer = self._next
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._look_up())
        return answer

    async def fresh(self) -> Ends | None:
        """The ends as of a lookup begun after this call; None when the broker does not answer."""
        # Shielded: a reader that goes away must not cancel the answer others wait for.
        return await asyncio.shield(self.refresh())

    async def close(self) -> None:
        """Stop a lookup in flight; whoever waits for it gets None."""
        runner, self._runner = self._runner, None
        if runner is not None and not runner.done():
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)

    async def _look_up(self) -> None:
        answer: asyncio.Future[Ends | None] | None = None
        try:
            while self._next is not None:
                answer, self._next = self._next, None
                self.lookups += 1
                try:
                    ends = await self._lookup()
                except Exception as exc:  # the broker's trouble must not become the reader's 500
                    log.warning("log_ends_lookup_failed", error=repr(exc))
                    ends = None
                if ends:
                    self._learn(ends)
                answer.set_result(ends or None)
        finally:
            for waiting in (answer, self._next):
                if waiting is not None and not waiting.done():
                    waiting.set_result(None)
            self._next = None

    def _learn(self, ends: Ends) -> None:
        for partition, end in ends.items():
            if end > self.known.get(partition, -1):
                self.known[partition] = end
        self.partitions = max(self.partitions or 0, max(ends) + 1)
