"""One poll of the positions serves every waiter; a waiter times out when the projection never gets there."""

from __future__ import annotations

import asyncio

import pytest

from kernel.position import Position
from read_store.position_watch import CallerWaitsTooMuch, PositionWatch, TooManyWaiters
from tests.unit.fakes import until


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


async def test_past_its_limit_a_waiter_is_refused_at_once() -> None:
    projection = Projection()
    watch = PositionWatch(projection.read, interval=0.005, limit=3)
    waiting = [asyncio.create_task(watch.wait_for(Position(0, 10), 5)) for _ in range(3)]
    await until(lambda: watch.waiters == 3, "three waiters in place")
    with pytest.raises(TooManyWaiters):
        await watch.wait_for(Position(0, 10), 5)
    projection.positions = {0: 10}
    assert all(await asyncio.gather(*waiting))
    assert await watch.wait_for(Position(0, 10), 1)  # room again


async def test_a_caller_past_its_own_bound_is_refused_at_once_and_takes_no_place_from_others() -> None:
    projection = Projection()
    watch = PositionWatch(projection.read, interval=0.005, limit=10, per_caller=3)
    flood = [asyncio.create_task(watch.wait_for(Position(0, 10**6), 5, "mallory")) for _ in range(10)]
    await until(lambda: sum(task.done() for task in flood) == 7, "mallory's reads past her bound answered")
    refused, kept = [task for task in flood if task.done()], [task for task in flood if not task.done()]
    assert all(isinstance(task.exception(), CallerWaitsTooMuch) for task in refused)
    assert (watch.waiters, watch.waiting_for("mallory")) == (3, 3)
    # Everyone else still has the rest of the process's places.
    others = [asyncio.create_task(watch.wait_for(Position(1, 5), 5, f"reader-{n}")) for n in range(7)]
    await until(lambda: watch.waiters == 10, "the other readers waiting")
    with pytest.raises(TooManyWaiters):  # the process's bound still holds
        await watch.wait_for(Position(1, 5), 5, "latecomer")
    projection.positions = {1: 5}
    assert all(await asyncio.gather(*others))
    projection.positions = {0: 10**6, 1: 5}
    assert await asyncio.gather(*kept) == [True] * 3
    assert (watch.waiters, watch.waiting_for("mallory")) == (0, 0)
    assert not watch._by_caller  # callers leave nothing behind


async def test_callers_that_cannot_be_told_apart_share_only_the_process_bound() -> None:
    projection = Projection()
    watch = PositionWatch(projection.read, interval=0.005, limit=4, per_caller=1)
    waiting = [asyncio.create_task(watch.wait_for(Position(0, 1), 5)) for _ in range(4)]
    await until(lambda: watch.waiters == 4, "four anonymous waiters in place")
    with pytest.raises(TooManyWaiters):
        await watch.wait_for(Position(0, 1), 5)
    projection.positions = {0: 1}
    assert all(await asyncio.gather(*waiting))


async def test_a_new_position_wakes_only_the_waiters_it_reached() -> None:
    projection = Projection()
    watch = PositionWatch(projection.read, interval=0.005)
    waiters = {n: asyncio.create_task(watch.wait_for(Position(n % 2, n), 5)) for n in range(10)}
    projection.positions = {0: 4, 1: 1}
    await until(lambda: waiters[4].done(), "the waiters reached woken")
    assert sorted(n for n, waiter in waiters.items() if waiter.done()) == [0, 1, 2, 4]
    projection.positions = {0: 8, 1: 9}
    assert all(await asyncio.gather(*waiters.values()))


async def test_waiters_that_gave_up_leave_nothing_behind() -> None:
    projection = Projection()
    watch = PositionWatch(projection.read, interval=0.001)
    for _ in range(3):
        await asyncio.gather(*(watch.wait_for(Position(0, 10**9), 0.01) for _ in range(200)))
    keeper = asyncio.create_task(watch.wait_for(Position(0, 10**9), 1))
    await until(
        lambda: sum(len(heap) for heap in watch._waiting.values()) <= 201, "abandoned entries dropped"
    )
    keeper.cancel()
