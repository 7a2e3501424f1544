"""One poll of the positions serves every waiter; a waiter times out when the projection never gets there."""

from __future__ import annotations

import asyncio

from kernel.position import Position
from read_store.position_watch import PositionWatch


class Projection:
    def __init__(self) -> None:
        self.positions: dict[int, int] = {}
        self.polls = 0

    async def read(self) -> dict[int, int]:
        self.polls += 1
        return dict(self.positions)


async def test_many_waiters_share_one_poll_and_wake_when_reached() -> None:
    projection = Projection()
    watch = PositionWatch(projection.read, interval=0.005)
    waiters = [asyncio.create_task(watch.wait_for(Position(0, n), 5)) for n in range(100)]
    await asyncio.sleep(0.05)
    assert not any(waiter.done() for waiter in waiters)
    polls_while_waiting = projection.polls
    assert polls_while_waiting < 50  # one poll per interval, not one per waiter
    projection.positions = {0: 99}
    assert all(await asyncio.gather(*waiters))


async def test_a_waiter_times_out_and_polling_stops_without_waiters() -> None:
    projection = Projection()
    projection.positions = {0: 3}
    watch = PositionWatch(projection.read, interval=0.005)
    assert await watch.wait_for(Position(0, 3), 1)
    assert not await watch.wait_for(Position(1, 0), 0.05)
    await asyncio.sleep(0.02)
    settled = projection.polls
    await asyncio.sleep(0.05)
    assert projection.polls == settled


async def test_polling_survives_a_failing_store() -> None:
    failures = 1

    async def flaky() -> dict[int, int]:
        nonlocal failures
        if failures:
            failures -= 1
            raise OSError("store down")
        return {0: 1}

    watch = PositionWatch(flaky, interval=0.005)
    assert await watch.wait_for(Position(0, 1), 5)
