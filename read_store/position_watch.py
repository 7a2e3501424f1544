"""Waiting for the projection to reach a position: one poll shared by every waiting request.

Waiters wait on a future of their own, kept per partition in offset order, so
a new position wakes only those it reached: two thousand waiters cost a poll
and a heap look-up, not two thousand wake-ups every poll. Their number is
bounded in the process (``TooManyWaiters`` past ``limit``) and per caller
(``CallerWaitsTooMuch`` past ``per_caller``): past either a read is refused at
once rather than queued behind the others, and a caller past its own bound
takes no place in the process's, so one caller cannot fill it for everyone.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable, Callable

import structlog

from domain.errors import MerlinError
from kernel.position import Position

log = structlog.get_logger()


class TooManyWaiters(MerlinError):
    """As many reads as allowed already wait for the projection here."""


class CallerWaitsTooMuch(MerlinError):
    """As many reads of this caller as allowed already wait for the projection here."""


class PositionWatch:
    """One poll of the projection's positions serves every request waiting for one.

    The poll runs only while someone waits, every ``interval`` s: a request
    waiting for its own write sees it within a few milliseconds of the commit,
    and a thousand waiters cost the store no more than one.
    """

    def __init__(
        self,
        positions: Callable[[], Awaitable[dict[int, int]]],
        interval: float = 0.005,
        limit: int = 1000,
        per_caller: int | None = None,
    ) -> None:
        self._positions = positions
        self._interval = interval
        self.limit = limit
        self.per_caller = limit if per_caller is None else min(per_caller, limit)
        # Waiters per caller; a caller is forgotten when its last waiter leaves.
        self._by_caller: dict[str, int] = {}
        self._latest: dict[int, int] = {}
        # Per partition: (offset, order, future) of each waiter, the lowest offset first.
        self._waiting: dict[int, list[tuple[int, int, asyncio.Future[None]]]] = {}
        self._order = itertools.count()
        self.waiters = 0
        self._abandoned = 0  # entries of waiters that timed out, still in the heaps
        self._poller: asyncio.Task[None] | None = None

    def reached(self, position: Position) -> bool:
        return self._latest.get(position.partition, -1) >= position.offset

    def waiting_for(self, caller: str) -> int:
        """How many of ``caller``'s reads wait now."""
        return self._by_caller.get(caller, 0)

    async def wait_for(self, position: Position, timeout: float, caller: str | None = None) -> bool:
        """True once the projection has applied ``position``; False after ``timeout`` s.

        ``caller`` (None: callers cannot be told apart) is held to ``per_caller``
        waiters before the process's bound is looked at, so that a caller
        refused for its own count never took a place from anyone else.
        """
        if self.reached(position):
            return True
        if caller is not None and self._by_caller.get(caller, 0) >= self.per_caller:
            raise CallerWaitsTooMuch(
                f"{self.per_caller} reads of this caller already wait for the projection"
            )
        if self.waiters >= self.limit:
            raise TooManyWaiters(f"{self.waiters} reads already wait for the projection")
        arrived: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(
            self._waiting.setdefault(position.partition, []), (position.offset, next(self._order), arrived)
        )
        self.waiters += 1
        if caller is not None:
            self._by_caller[caller] = self._by_caller.get(caller, 0) + 1
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll())
        try:
            await asyncio.wait_for(arrived, timeout)
            return True
        except TimeoutError:
            self._abandoned += 1
            return self.reached(position)
        finally:
            self.waiters -= 1
            if caller is not None:
                left = self._by_caller[caller] - 1
                if left:
                    self._by_caller[caller] = left
                else:
                    del self._by_caller[caller]

    async def _poll(self) -> None:
        while self.waiters:
            try:
                latest = await self._positions()
            except Exception as exc:  # the store is down: waiters time out, polling goes on
                log.warning("positions_poll_failed", error=repr(exc))
                await asyncio.sleep(0.5)
                continue
            self._latest = latest
            self._wake(latest)
            await asyncio.sleep(self._interval)

    def _wake(self, latest: dict[int, int]) -> None:
        for partition, heap in self._waiting.items():
            applied = latest.get(partition, -1)
            while heap and heap[0][0] <= applied:
                arrived = heapq.heappop(heap)[2]
                if arrived.done():
                    self._abandoned -= 1
                else:
                    arrived.set_result(None)
        if self._abandoned > self.waiters + 100:
            # Waiters that gave up for positions not reached yet: drop their entries.
            for partition, heap in self._waiting.items():
                self._waiting[partition] = [entry for entry in heap if not entry[2].done()]
                heapq.heapify(self._waiting[partition])
            self._abandoned = 0
