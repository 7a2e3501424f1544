"""The dispatcher's ordering, fairness, failure modes and rebalance drop, with a scripted deliverer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

import pytest

from forwarder.dispatcher import Dispatcher
from forwarder.jobs import Blocked, Ended, Job
from forwarder.tracker import OffsetTracker
from tests.unit.scripted import Scripted
from webhooks.endpoints import Endpoint
from webhooks.sending import Attempt, Deliverer, DeliveryFailed

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


class ScriptedDeliverer(Deliverer):
    """Records the order of calls; fails events listed in ``refuse``; waits on ``gate`` if given."""

    def __init__(self, endpoint: Endpoint, refuse: set[str] | None = None) -> None:
        super().__init__(Scripted([]), endpoint)
        self.calls: list[str] = []
        self.in_flight: dict[str, int] = {}
        self.max_per_room = 0
        self.refuse = refuse or set()
        self.gate: asyncio.Event | None = None

    async def deliver(
        self, event_id: str, body: bytes, traceparent: str | None = None, tracestate: str | None = None
    ) -> list[Attempt]:
        room = body.decode()
        self.in_flight[room] = self.in_flight.get(room, 0) + 1
        self.max_per_room = max(self.max_per_room, self.in_flight[room])
        self.calls.append(event_id)
        try:
            if self.gate is not None:
                await self.gate.wait()
            await asyncio.sleep(0)
            if event_id in self.refuse:
                raise DeliveryFailed("refused with 400", [Attempt("now", status=400)])
            return [Attempt("now", status=200)]
        finally:
            self.in_flight[room] -= 1


class Report:
    """The dispatcher's report as these tests hear it: each record finished, and each dead letter."""

    def __init__(
        self,
        finished: Callable[[Job], None],
        dead_letter: Callable[[Job, Endpoint, str, list[Attempt]], Awaitable[None]],
    ) -> None:
        self._finished = finished
        self._dead_letter = dead_letter

    def finished(self, job: Job) -> None:
        self._finished(job)

    async def dead_letter(self, job: Job, endpoint: Endpoint, reason: str, attempts: list[Attempt]) -> None:
        await self._dead_letter(job, endpoint, reason, attempts)

    def ended(self, job: Job, outcome: Ended, seconds: float) -> None:
        pass

    def blocked(self, room: Blocked, seconds: float) -> None:
        pass


def endpoint(**changes: object) -> Endpoint:
    return Endpoint.model_validate(
        {"name": "e", "url": "http://x.test/", "secret": SECRET, "max_in_flight": 4, **changes}
    )


def job(room: str, n: int, partition: int = 0) -> Job:
    return Job(partition, n, room, f"{room}-{n}", room.encode(), generation=0)


@contextlib.asynccontextmanager
async def running(dispatcher: Dispatcher) -> AsyncIterator[None]:
    task = asyncio.create_task(dispatcher.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(condition: object, what: str) -> None:
    for _ in range(10_000):
        if callable(condition) and condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(what)


async def test_each_room_is_delivered_in_order_one_at_a_time() -> None:
    deliverer = ScriptedDeliverer(endpoint())
    finished: list[str] = []
    dispatcher = Dispatcher(deliverer, Report(lambda j: finished.append(j.event_id), _no_dead_letters))
    for n in range(20):
        for room in ("a", "b", "c"):
            dispatcher.submit(job(room, n))
    async with running(dispatcher):
        await until(lambda: len(finished) == 60, "all finished")
    for room in ("a", "b", "c"):
        assert [e for e in finished if e.startswith(room)] == [f"{room}-{n}" for n in range(20)]
    assert deliverer.max_per_room == 1
    assert dispatcher.size == 0


async def test_rooms_take_turns_so_a_busy_room_cannot_starve_others() -> None:
    deliverer = ScriptedDeliverer(endpoint(max_in_flight=1))
    finished: list[str] = []
    dispatcher = Dispatcher(deliverer, Report(lambda j: finished.append(j.event_id), _no_dead_letters))
    for n in range(100):
        dispatcher.submit(job("hot", n))
    for room in ("q1", "q2", "q3"):
        dispatcher.submit(job(room, 0))
    async with running(dispatcher):
        await until(lambda: len(finished) == 103, "all finished")
    quiet_positions = [finished.index(f"{room}-0") for room in ("q1", "q2", "q3")]
    assert max(quiet_positions) < 8, quiet_positions


async def test_a_refused_event_is_dead_lettered_and_the_room_goes_on() -> None:
    deliverer = ScriptedDeliverer(endpoint(), refuse={"a-1"})
    finished: list[str] = []
    dead: list[tuple[str, str]] = []

    async def dead_letter(j: Job, _endpoint: Endpoint, reason: str, _attempts: list[Attempt]) -> None:
        dead.append((j.event_id, reason))

    dispatcher = Dispatcher(deliverer, Report(lambda j: finished.append(j.event_id), dead_letter))
    for n in range(3):
        dispatcher.submit(job("a", n))
    async with running(dispatcher):
        await until(lambda: len(finished) == 3, "all finished")
    assert finished == ["a-0", "a-1", "a-2"]
    assert dead == [("a-1", "refused with 400")]


async def test_block_mode_stops_the_room_and_only_that_room() -> None:
    deliverer = ScriptedDeliverer(endpoint(on_failure="block"), refuse={"a-1"})
    finished: list[str] = []
    dispatcher = Dispatcher(deliverer, Report(lambda j: finished.append(j.event_id), _no_dead_letters))
    for n in range(3):
        dispatcher.submit(job("a", n))
        dispatcher.submit(job("b", n))
    async with running(dispatcher):
        await until(lambda: len(finished) == 4, "a-0 and room b finished")
        await asyncio.sleep(0.01)
    assert sorted(finished) == ["a-0", "b-0", "b-1", "b-2"]
    assert set(dispatcher.blocked_rooms()) == {"a"}
    assert dispatcher.blocked_rooms()["a"].job.event_id == "a-1"
    assert dispatcher.size == 2  # a-1 and a-2 wait for an operator


async def test_a_blocked_rooms_backlog_does_not_fill_the_buffer_of_the_others() -> None:
    deliverer = ScriptedDeliverer(endpoint(on_failure="block", buffer=10), refuse={"a-0"})
    finished: list[str] = []
    dispatcher = Dispatcher(deliverer, Report(lambda j: finished.append(j.event_id), _no_dead_letters))
    dispatcher.submit(job("a", 0))
    async with running(dispatcher):
        await until(lambda: dispatcher.blocked_rooms(), "room a blocked")
        for n in range(1, 10):
            dispatcher.submit(job("a", n))
        assert not dispatcher.full()  # ten events held by room a
        for n in range(9):
            dispatcher.submit(job("b", n))
        assert not dispatcher.full()
        dispatcher.submit(job("b", 9))
        await until(lambda: len(finished) == 10, "room b delivered")
        for n in range(10, 20):  # past a buffer's worth held, room a counts again
            dispatcher.submit(job("a", n))
        assert dispatcher.full()


async def test_unblock_retry_sends_the_head_again_and_the_room_goes_on() -> None:
    deliverer = ScriptedDeliverer(endpoint(on_failure="block"), refuse={"a-0"})
    finished: list[str] = []
    dispatcher = Dispatcher(deliverer, Report(lambda j: finished.append(j.event_id), _no_dead_letters))
    dispatcher.submit(job("a", 0))
    dispatcher.submit(job("a", 1))
    async with running(dispatcher):
        await until(lambda: dispatcher.blocked_rooms(), "room a blocked")
        assert not dispatcher.unblock("a", "a-1", "retry")  # not the event it is blocked on
        deliverer.refuse.clear()
        assert dispatcher.unblock("a", "a-0", "retry")
        await until(lambda: len(finished) == 2, "room a delivered")
    assert finished == ["a-0", "a-1"]
    assert deliverer.calls == ["a-0", "a-0", "a-1"]
    assert dispatcher.size == dispatcher.held == 0


async def test_unblock_skip_dead_letters_the_head_and_the_room_goes_on() -> None:
    deliverer = ScriptedDeliverer(endpoint(on_failure="block"), refuse={"a-0"})
    finished: list[str] = []
    dead: list[tuple[str, str, int]] = []

    async def dead_letter(j: Job, _endpoint: Endpoint, reason: str, attempts: list[Attempt]) -> None:
        dead.append((j.event_id, reason, len(attempts)))

    dispatcher = Dispatcher(deliverer, Report(lambda j: finished.append(j.event_id), dead_letter))
    dispatcher.submit(job("a", 0))
    dispatcher.submit(job("a", 1))
    async with running(dispatcher):
        await until(lambda: dispatcher.blocked_rooms(), "room a blocked")
        assert dispatcher.unblock("a", "a-0", "skip")
        await until(lambda: len(finished) == 2, "room a went on")
    assert finished == ["a-0", "a-1"]
    assert deliverer.calls == ["a-0", "a-1"]  # the skipped event is not sent again
    assert dead == [("a-0", "skipped by operator", 1)]
    assert not dispatcher.blocked_rooms()


async def test_dropping_revoked_partitions_cancels_their_work() -> None:
    deliverer = ScriptedDeliverer(endpoint())
    deliverer.gate = asyncio.Event()
    finished: list[str] = []
    dispatcher = Dispatcher(deliverer, Report(lambda j: finished.append(j.event_id), _no_dead_letters))
    for n in range(5):
        dispatcher.submit(job("a", n, partition=0))
        dispatcher.submit(job("b", n, partition=1))
    async with running(dispatcher):
        await until(lambda: len(deliverer.calls) == 2, "both rooms in flight")
        dispatcher.drop({0})
        assert dispatcher.feeding_partitions() == {1}
        deliverer.gate.set()
        await until(lambda: len(finished) == 5, "room b finished")
    assert finished == [f"b-{n}" for n in range(5)]
    assert dispatcher.size == 0


async def test_a_crashed_worker_restarts_with_its_queues() -> None:
    deliverer = ScriptedDeliverer(endpoint())
    finished: list[str] = []
    crashes = 0

    async def dead_letter(_j: Job, _e: Endpoint, _r: str, _a: list[Attempt]) -> None:
        nonlocal crashes
        crashes += 1
        raise RuntimeError("the dead-letter topic is down")

    deliverer.refuse = {"a-0"}
    dispatcher = Dispatcher(deliverer, Report(lambda j: finished.append(j.event_id), dead_letter))
    dispatcher.submit(job("a", 0))
    dispatcher.submit(job("a", 1))
    with pytest.raises(RuntimeError, match="dead-letter topic is down"):
        await dispatcher.run()
    deliverer.refuse = set()
    async with running(dispatcher):
        await until(lambda: len(finished) == 2, "the room finished after the restart")
    assert finished == ["a-0", "a-1"]
    assert crashes == 1


class Log:
    """A partition of the log as the parked rooms' ``Rereads`` see it; the test hands records over."""

    def __init__(self) -> None:
        self.records: list[Job] = []
        self.handed = 0  # records handed to the dispatcher so far, as the flow would
        self.tracker = OffsetTracker()
        self.opened: list[tuple[str, int]] = []

    def write(self, room: str, *numbers: int) -> None:
        for n in numbers:
            self.records.append(Job(0, len(self.records), room, f"{room}-{n}", room.encode(), generation=0))

    def hand_over(self, dispatcher: Dispatcher) -> None:
        for record in self.records[self.handed :]:
            self.tracker.add(0, record.offset, 1)
            dispatcher.submit(record)
        self.handed = len(self.records)

    def committed(self) -> int:
        return self.tracker.committable().get(0, 0)

    def passed(self, partition: int) -> int:
        return self.handed

    def open(self, room: str, partition: int, start: int) -> LogReader:
        self.opened.append((room, start))
        return LogReader(self, room, start)


class LogReader:
    def __init__(self, log: Log, room: str, start: int) -> None:
        self.log, self.room, self.position = log, room, start

    async def next(self, max_records: int) -> tuple[list[Job], int]:
        await asyncio.sleep(0)
        chunk = self.log.records[self.position : self.position + max_records]
        self.position += len(chunk)
        return [replace(j, reread=True) for j in chunk if j.room_id == self.room], self.position

    async def close(self) -> None:
        pass


def parking(buffer: int) -> tuple[Log, ScriptedDeliverer, Dispatcher]:
    log = Log()
    deliverer = ScriptedDeliverer(endpoint(on_failure="block", buffer=buffer), refuse={"a-0"})

    def finished(j: Job) -> None:
        log.tracker.done(j.partition, j.offset)

    return log, deliverer, Dispatcher(deliverer, Report(finished, _no_dead_letters), rereads=log)


async def test_a_blocked_rooms_backlog_past_a_buffer_is_left_in_the_log_and_read_again_in_order() -> None:
    log, deliverer, dispatcher = parking(buffer=4)
    log.write("a", 0)
    async with running(dispatcher):
        log.hand_over(dispatcher)
        await until(lambda: dispatcher.blocked_rooms(), "room a blocked")
        for n in range(1, 21):
            log.write("a", n)
            log.write("b", n)
        log.hand_over(dispatcher)
        await until(lambda: log.tracker.pending() == 5, "room b delivered; room a's kept and its pin wait")
        assert not dispatcher.full()
        assert dispatcher.size == dispatcher.held == 4  # a buffer's worth of room a kept; the rest parked
        assert dispatcher.parked_rooms() == {"a"}
        assert log.committed() == 0  # nothing of room a's committed past its blocked head
        deliverer.refuse.clear()
        assert dispatcher.unblock("a", "a-0", "retry")
        for n in range(21, 31):  # the flow goes on meanwhile: these the re-read brings too
            log.write("a", n)
            log.hand_over(dispatcher)
            await asyncio.sleep(0)
        await until(lambda: "a-30" in deliverer.calls, "room a caught up")
        log.write("a", 31)
        log.hand_over(dispatcher)  # past the re-read: the flow's again
        await until(lambda: log.committed() == len(log.records), "everything committed")
    room_a = [call for call in deliverer.calls if call.startswith("a-")]
    assert room_a == ["a-0"] + [f"a-{n}" for n in range(32)]  # its failed first try, then each once in order
    assert dispatcher.parked_rooms() == set()
    assert dispatcher.size == 0
    assert log.opened == [("a", 7)]  # from its first event not kept: a-4


async def test_a_reread_ahead_of_the_flow_is_not_delivered_twice() -> None:
    log, deliverer, dispatcher = parking(buffer=10)  # re-read up to five at a time
    deliverer.refuse.add("x-0")
    log.write("x", 0)
    log.write("a", 0)
    async with running(dispatcher):
        log.hand_over(dispatcher)
        await until(lambda: len(dispatcher.blocked_rooms()) == 2, "rooms a and x blocked")
        log.write("x", *range(1, 9))
        log.write("a", 1)
        log.hand_over(dispatcher)
        assert dispatcher.parked_rooms() == {"a"}  # room x holds the rest of the buffer
        log.write("a", 2, 3)  # in the log, not yet handed to the dispatcher
        deliverer.refuse.discard("a-0")
        assert dispatcher.unblock("a", "a-0", "retry")
        await until(lambda: "a-3" in deliverer.calls, "the re-read reached the end of the log")
        log.hand_over(dispatcher)
        await until(lambda: log.tracker.pending() == 9, "all of room a finished; room x waits")
    assert [call for call in deliverer.calls if call.startswith("a")] == ["a-0", "a-0", "a-1", "a-2", "a-3"]
    assert dispatcher.parked_rooms() == set()


async def test_dropping_a_parked_rooms_partition_forgets_it() -> None:
    log, _deliverer, dispatcher = parking(buffer=1)
    log.write("a", 0)
    async with running(dispatcher):
        log.hand_over(dispatcher)
        await until(lambda: dispatcher.blocked_rooms(), "room a blocked")
        log.write("a", 1, 2)
        log.hand_over(dispatcher)
        assert dispatcher.parked_rooms() == {"a"}
        dispatcher.drop({0})
    assert dispatcher.parked_rooms() == set()
    assert dispatcher.size == dispatcher.held == 0
    assert dispatcher.unblock("a", "a-0", "retry") is False


async def _no_dead_letters(j: Job, _endpoint: Endpoint, reason: str, _attempts: list[Attempt]) -> None:
    raise AssertionError(f"unexpected dead letter for {j.event_id}: {reason}")
