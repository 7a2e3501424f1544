"""Reads waiting for a position: bounded per caller, refused at once past the end or off their partition."""

from __future__ import annotations

import asyncio

import pytest

from domain import InvalidCommand
from kernel.auth import ALL_ROOMS, READ, Caller
from kernel.position import Position, partition_of
from kernel.settings import KafkaSettings
from read_api.log_ends import Ends, LogEnds
from read_api.settings import ReadApiSettings
from read_api.state import ReadApi
from read_store.position_watch import PositionWatch
from read_store.reader import ReadStore
from read_store.settings import ReadStoreSettings
from tests.unit.fakes import until

PARTITIONS = 3


def room_on(partition: int, besides: str = "") -> str:
    """A room whose events the write API puts on ``partition``."""
    return next(
        room
        for room in (f"room-{n}" for n in range(1000))
        if partition_of(room, PARTITIONS) == partition and room != besides
    )


def caller(subject: str, *rooms: str) -> Caller:
    return Caller(subject, frozenset({READ}), frozenset(rooms or {ALL_ROOMS}))


class Log:
    """The events topic's ends as the broker would tell them; a lookup can be held in flight."""

    def __init__(self) -> None:
        self.ends = dict.fromkeys(range(PARTITIONS), 0)
        self.lookups = 0
        self.held: asyncio.Event | None = None

    def write(self, partition: int) -> Position:
        """One more record on ``partition``: its position, as the write API answers it."""
        self.ends[partition] += 1
        return Position(partition, self.ends[partition] - 1)

    async def look_up(self) -> Ends | None:
        self.lookups += 1
        seen = dict(self.ends)  # the broker answers with the ends as they were when asked
        if self.held is not None:
            await self.held.wait()
        return seen


class Projection:
    def __init__(self) -> None:
        self.positions: dict[int, int] = {}

    async def read(self) -> dict[int, int]:
        return dict(self.positions)


class Reads(ReadStore):
    """The read store's position watch over a projection the test moves; no database."""

    def __init__(self, projection: Projection, limit: int, per_caller: int) -> None:
        self._watch = PositionWatch(projection.read, interval=0.002, limit=limit, per_caller=per_caller)


def read_api(
    log: Log, projection: Projection, wait: float = 30, limit: int = 20, per_caller: int = 3
) -> ReadApi:
    settings = ReadApiSettings(
        position_wait_seconds=wait, max_position_waiters=limit, max_position_waiters_per_caller=per_caller
    )
    api = ReadApi(settings, ReadStoreSettings(), KafkaSettings(partitions=PARTITIONS))
    api._reads = Reads(projection, limit, per_caller)
    api.ends = LogEnds(log.look_up)
    return api


async def test_one_caller_flooding_waits_leaves_every_other_caller_its_read_your_writes() -> None:
    log, projection = Log(), Projection()
    api = read_api(log, projection, limit=20, per_caller=3)
    lobby = room_on(0)
    pending = log.write(0)  # not projected while the flood goes on
    mallory = caller("mallory", lobby)
    flood = [asyncio.create_task(api.caught_up(str(pending), mallory, lobby)) for _ in range(40)]
    await until(lambda: sum(task.done() for task in flood) == 37, "mallory's reads past her bound answered")
    kept = [task for task in flood if not task.done()]
    refused = [task.result() for task in flood if task.done()]
    assert all(answer is not None for answer in refused)
    assert {(answer.status_code, answer.headers["retry-after"]) for answer in refused if answer} == {
        (429, "1")
    }
    assert all(b"too-many-waiting-reads" in answer.body for answer in refused if answer)
    # Every other caller, each reading its own fresh write, has the rest of the places.
    writes = {n: log.write(n % PARTITIONS) for n in range(17)}
    others = [
        asyncio.create_task(api.caught_up(str(at), caller(f"reader-{n}"), room_on(at.partition)))
        for n, at in writes.items()
    ]
    await until(lambda: api.reads._watch.waiters == 20, "every other reader waiting")
    assert not any(task.done() for task in others)
    projection.positions = {p: end - 1 for p, end in log.ends.items()}
    assert await asyncio.gather(*others) == [None] * len(others)
    assert await asyncio.gather(*kept) == [None] * 3


async def test_a_position_past_the_end_of_the_log_is_refused_at_once() -> None:
    log, projection = Log(), Projection()
    api = read_api(log, projection, wait=30)
    lobby = room_on(1)
    written = log.write(1)
    with pytest.raises(InvalidCommand) as refused:
        await asyncio.wait_for(api.caught_up(f"1-{written.offset + 1}", caller("alice"), lobby), 1)
    assert refused.value.reason == "is beyond the end of the event log"
    with pytest.raises(InvalidCommand, match="beyond the end"):
        await asyncio.wait_for(api.caught_up("1-100000000", caller("alice"), lobby), 1)
    assert api.reads._watch.waiters == 0


async def test_a_fresh_write_past_the_ends_last_seen_still_waits_and_reads() -> None:
    log, projection = Log(), Projection()
    api = read_api(log, projection, wait=30)
    lobby = room_on(2)
    first = log.write(2)
    projection.positions = {2: first.offset}
    assert await api.caught_up(str(first), caller("alice"), lobby) is None
    seen = log.lookups
    assert await api.caught_up(str(first), caller("alice"), lobby) is None
    assert log.lookups == seen  # a position below the end known needs no lookup
    fresh = log.write(2)  # after the ends were last looked up
    reading = asyncio.create_task(api.caught_up(str(fresh), caller("alice"), lobby))
    await until(lambda: api.reads._watch.waiters == 1, "the fresh write's reader waiting")
    projection.positions = {2: fresh.offset}
    assert await reading is None


async def test_a_lookup_begun_before_the_read_arrived_does_not_judge_it() -> None:
    log, projection = Log(), Projection()
    api = read_api(log, projection, wait=30)
    lobby = room_on(0)
    log.write(0)
    assert await api.ends.fresh() == {0: 1, 1: 0, 2: 0}
    log.held = asyncio.Event()
    probe = asyncio.create_task(api.caught_up("0-5", caller("bob"), lobby))
    await until(lambda: log.lookups == 2, "a lookup in flight")
    fresh = log.write(0)  # acknowledged while that lookup is on its way
    reading = asyncio.create_task(api.caught_up(str(fresh), caller("alice"), lobby))
    await until(lambda: api.ends._next is not None, "the fresh write's reader asking for the next lookup")
    log.held.set()
    with pytest.raises(InvalidCommand, match="beyond the end"):
        await probe
    await until(lambda: api.reads._watch.waiters == 1, "the fresh write's reader waiting, not refused")
    assert log.lookups == 3
    projection.positions = {0: fresh.offset}
    assert await reading is None


async def test_a_position_on_another_partition_gives_the_same_answer_whatever_it_holds() -> None:
    log, projection = Log(), Projection()
    api = read_api(log, projection, wait=30)
    lobby, elsewhere = room_on(0), room_on(1)
    for _ in range(5):
        log.write(1)
    projection.positions = {1: 2}
    eve = caller("eve", lobby)
    answers = []
    for offset in (0, 3, 4, 5, 10**9):  # applied, written not applied, past the end
        for room in (lobby, None):  # a room's messages; an event, whose room is not known before
            with pytest.raises(InvalidCommand) as refused:
                await asyncio.wait_for(api.caught_up(f"1-{offset}", eve, room), 1)
            answers.append(str(refused.value))
    assert set(answers) == {
        "after_position: is not the position of a write to this room",
        "after_position: is not the position of a write to a room this token covers",
    }
    assert api.reads._watch.waiters == 0
    # A caller who may read the other partition's rooms is answered as before.
    assert await api.caught_up("1-0", caller("carol", elsewhere), None) is None
    assert await api.caught_up("1-0", caller("dave"), None) is None
    with pytest.raises(InvalidCommand, match="beyond the end"):
        await api.caught_up("1-5", caller("dave"), None)
