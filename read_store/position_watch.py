"""Waiting for the projection to reach a position: one poll shared by every waiting request."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from kernel.position import Position

log = structlog.get_logger()


class PositionWatch:
    """One poll of the projection's positions serves every request waiting for one.

    The poll runs only while someone waits, every ``interval`` s: a request
    waiting for its own write sees it within a few milliseconds of the commit,
    and a thousand waiters cost the store no more than one.
    """

    def __init__(self, positions: Callable[[], Awaitable[dict[int, int]]], interval: float = 0.005) -> None:
        self._positions = positions
        self._interval = interval
        self._latest: dict[int, int] = {}
        self._changed = asyncio.Condition()
        self._waiters = 0
        self._poller: asyncio.Task[None] | None = None

    async def wait_for(self, position: Position, timeout: float) -> bool:
        def reached() -> bool:
            return self._latest.get(position.partition, -1) >= position.offset

        async with self._changed:
            self._waiters += 1
            try:
                if self._poller is None or self._poller.done():
                    self._poller = asyncio.create_task(self._poll())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._changed.wait_for(reached)
                return reached()
            finally:
                self._waiters -= 1

    async def _poll(self) -> None:
        while self._waiters:
            try:
                latest = await self._positions()
            except Exception as exc:  # the store is down: waiters time out, polling goes on
                log.warning("positions_poll_failed", error=repr(exc))
                await asyncio.sleep(0.5)
                continue
            async with self._changed:
                self._latest = latest
                self._changed.notify_all()
            await asyncio.sleep(self._interval)
