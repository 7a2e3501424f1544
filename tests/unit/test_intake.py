"""The intake around a scripted role: what it pauses for it, what a revocation drops, what it commits."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from uuid import UUID

from domain import MessageCreated
from forwarder.intake import Intake
from forwarder.ledger import Ledger
from forwarder.metrics import ForwarderMetrics
from forwarder.settings import ForwarderSettings
from forwarder.source import Batch
from forwarder.supervisor import BackoffPolicy
from tests.unit.fakes import FakeSource, batch, consumed, until

T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)


def created(n: int) -> MessageCreated:
    return MessageCreated(UUID(int=n), f"room{n}", UUID(int=n), "ann", "hi", T0)


class Scripted:
    """A ``BatchHandler`` that keeps each record unfinished until the test finishes it."""

    def __init__(self, ledger: Ledger, stop_grace: float = 0.0, hold: asyncio.Event | None = None) -> None:
        self.ledger = ledger
        self.stop_grace = stop_grace
        self.hold = hold  # while given and not set, each batch waits for it
        self.handled: list[list[tuple[int, int]]] = []
        self.wanted_paused: set[int] = set()
        self.revocations: list[set[int]] = []
        self.stage_ran = asyncio.Event()
        self.stage_cancelled = asyncio.Event()

    async def handle(self, batch: Batch, generation: int) -> None:
        if self.hold is not None:
            await self.hold.wait()
        mine = self.ledger.still_mine(batch.records, generation)
        self.handled.append([(c.record.partition, c.record.offset) for c in mine])
        for c in mine:
            self.ledger.tracker.add(c.record.partition, c.record.offset, 1)

    def finish(self, partition: int, offset: int, generation: int = 0) -> None:
        self.ledger.finish(partition, offset, generation)

    def to_pause(self, paused: set[int]) -> set[int]:
        return set(self.wanted_paused)

    def revoked(self, partitions: set[int]) -> None:
        self.revocations.append(set(partitions))

    async def answers(self) -> bool:
        return True

    def stages(self) -> Mapping[str, Callable[[], Awaitable[None]]]:
        return {"own": self._own}

    async def _own(self) -> None:
        self.stage_ran.set()
        try:
            await asyncio.Event().wait()
        finally:
            self.stage_cancelled.set()


def intake(role_grace: float = 0.0, hold: asyncio.Event | None = None) -> tuple[Intake, FakeSource, Scripted]:
    source, ledger = FakeSource(), Ledger()
    role = Scripted(ledger, role_grace, hold)
    settings = ForwarderSettings(batch_max=100, poll_timeout=0.01, backlog_pause_after=0.0)
    flow = Intake("test", settings, source, role, ledger, ForwarderMetrics(), BackoffPolicy(max_restarts=0))
    return flow, source, role


@contextlib.asynccontextmanager
async def running(flow: Intake) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(flow.run(stop))
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_the_partitions_the_role_asks_for_are_paused_until_it_lets_them_go() -> None:
    flow, source, role = intake()
    async with running(flow):
        role.wanted_paused = {1, 2}
        await until(lambda: source.pauses == [{1, 2}], "paused as the role asked")
        role.wanted_paused = {2}
        await until(lambda: source.resumes == [{1}], "partition 1 let go")
        await source.turns()
        assert (source.pauses, source.resumes) == ([{1, 2}], [{1}])
        assert (
            flow.metrics.registry.get_sample_value("merlin_forwarder_paused_partitions", {"flow": "test"})
            == 1
        )


async def test_commits_move_in_arrival_order_as_the_role_finishes_records() -> None:
    flow, source, role = intake()
    async with running(flow):
        source.push(batch(consumed(0, 0, created(0)), consumed(0, 1, created(1)), consumed(1, 0, created(2))))
        await until(lambda: role.handled == [[(0, 0), (0, 1), (1, 0)]], "the batch handed to the role")
        role.finish(0, 1)
        role.finish(1, 0)
        await until(lambda: source.committed() == {1: 1}, "partition 1 committed")
        role.finish(0, 0)
        await until(lambda: source.committed() == {0: 2, 1: 1}, "partition 0 committed past both")
    assert source.commits == [{1: 1}, {0: 2, 1: 1}, {0: 2, 1: 1}]  # the last as the flow stops
    assert source.closed


async def test_a_revocation_tells_the_role_drops_waiting_records_and_answers_what_was_finished() -> None:
    hold = asyncio.Event()
    flow, source, role = intake(hold=hold)
    async with running(flow):
        source.push(batch(consumed(0, 0, created(0))))
        await until(lambda: source.queued() == 0, "the head batch taken")
        hold.set()
        await until(lambda: len(role.handled) == 1, "the head batch handled")
        role.finish(0, 0)
        await until(lambda: source.committed() == {0: 1}, "offset 0 committed")
        hold.clear()
        source.push(batch(consumed(0, 1, created(1)), consumed(1, 0, created(2))))
        source.push(batch(consumed(0, 2, created(3)), consumed(1, 1, created(4))))
        await until(lambda: source.queued() == 0, "both batches taken in")
        assert await source.revoke([0]) == {0: 1}
        assert role.revocations == [{0}]
        hold.set()
        await until(lambda: len(role.handled) == 3, "the kept records handled")
        role.finish(0, 1)  # of the earlier generation: stale, it changes nothing
    assert role.handled[1:] == [[(1, 0)], [(1, 1)]]  # the head, under way, checks its generation itself
    assert all(0 not in commit for commit in source.commits[1:])


class StoppingSource(FakeSource):
    """A FakeSource that tells when a fetch has returned after ``stop`` was set: the intake's last."""

    def __init__(self, stop: asyncio.Event) -> None:
        super().__init__()
        self.stop = stop
        self.last_fetched = asyncio.Event()

    async def batch(self, max_records: int, timeout: float) -> Batch:
        got = await super().batch(max_records, timeout)
        if self.stop.is_set():
            self.last_fetched.set()
        return got


async def stopped_while_handling(grace: float) -> tuple[Scripted, bool]:
    """Stop a flow while its role handles a batch; let the role go on once the intake has wound down.
    The role, and whether the source was still open then."""
    hold, stop = asyncio.Event(), asyncio.Event()
    ledger, source = Ledger(), StoppingSource(stop)
    role = Scripted(ledger, grace, hold)
    settings = ForwarderSettings(batch_max=100, poll_timeout=0.01)
    flow = Intake("test", settings, source, role, ledger, ForwarderMetrics(), BackoffPolicy(max_restarts=0))
    running = asyncio.create_task(flow.run(stop))
    source.push(batch(consumed(0, 0, created(0))))
    await until(lambda: source.queued() == 0, "the batch taken in")
    stop.set()
    await asyncio.wait_for(source.last_fetched.wait(), 5)
    for _ in range(20):  # the intake's consumer stage returns, and the intake winds down as it may
        await asyncio.sleep(0)
    still_open = not source.closed
    hold.set()
    await asyncio.wait_for(running, 5)
    assert source.closed
    return role, still_open


async def test_a_role_with_a_grace_gets_what_was_taken_in_handled_before_the_source_closes() -> None:
    role, still_open = await stopped_while_handling(5.0)
    assert still_open
    assert role.handled == [[(0, 0)]]


async def test_a_role_without_a_grace_leaves_what_was_taken_in_to_the_next_run() -> None:
    role, still_open = await stopped_while_handling(0.0)
    assert not still_open
    assert role.handled == []


async def test_the_roles_own_stages_run_beside_the_intake_until_it_stops() -> None:
    flow, _source, role = intake()
    async with running(flow):
        await until(role.stage_ran.is_set, "the role's stage started")
    assert role.stage_cancelled.is_set()
