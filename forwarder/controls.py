"""The forwarder's side of the control channel (``kernel.control``): pauses, unblocks, reports.

- An endpoint is paused while ``paused/<endpoint>`` exists: its flow stops (it
  leaves its group, so Kafka's admin API may move its offsets) and starts again
  when the key is deleted.
- A room that blocks is reported as ``blocked/<endpoint>/<room>``; the report
  is deleted once that room's head event is finished, here or on whichever
  instance owns the room after a rebalance.
- ``unblock/<endpoint>/<room>`` is carried out by the instance holding that
  room blocked on that very event, which then deletes the command; one that
  arrives before the room blocks here is carried out when it does.
- Every few seconds each instance reports its delivery and error rates.
- An endpoint with ``disable_after_seconds`` that fails that long here without
  one delivery succeeding is disabled: paused on every instance, with the
  reason in its pause record, until an operator resumes it; it then goes on
  from where delivery stopped (its group's committed offsets).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Collection, Coroutine, Mapping
from datetime import UTC, datetime
from typing import Any

import structlog

from domain.envelope import format_time
from forwarder.dispatcher import Dispatcher
from forwarder.jobs import Blocked, Job
from forwarder.metrics import ForwarderMetrics
from kernel.control import BLOCKED, DISABLED, PAUSED, RATES, UNBLOCK, ControlLog, ControlWriter, key, now
from webhooks.endpoints import Endpoint

log = structlog.get_logger()

_FAILED = frozenset({"dead_lettered", "blocked", "skipped"})
_FAILING = frozenset({"dead_lettered", "blocked"})  # what the endpoint did (a skip is an operator's)


class Controls:
    """What operators asked of this forwarder instance, and what it tells them."""

    def __init__(
        self,
        control: ControlLog,
        writer: ControlWriter,
        instance: str,
        metrics: ForwarderMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.control = control
        self.writer = writer
        self.instance = instance
        self.metrics = metrics or ForwarderMetrics()
        self._clock = clock
        self._failing_since: dict[str, float] = {}  # per endpoint: its first failure since a success
        self._dispatchers: dict[str, Dispatcher] = {}
        self._pauses = asyncio.Event()  # set, then replaced, on every pause or resume
        self._counts: Counter[tuple[str, str]] = Counter()
        self._tasks: set[asyncio.Task[object]] = set()
        for name, value in control.under(PAUSED).items():  # read before this listens
            self._heard(key(PAUSED, name), value)
        control.listen(self._heard)

    # -- pause ----------------------------------------------------------------------------------

    def paused(self, endpoint: str) -> bool:
        return key(PAUSED, endpoint) in self.control.values

    async def until_paused(self, endpoint: str, paused: bool = True) -> None:
        """Wait until the endpoint is paused (or, with ``paused=False``, not paused)."""
        while self.paused(endpoint) != paused:  # the state, not an edge: no change is missed
            await self._pauses.wait()

    # -- blocked rooms --------------------------------------------------------------------------

    def attach(self, endpoint: str, dispatcher: Dispatcher) -> None:
        """``dispatcher`` now delivers ``endpoint`` here (a flow started)."""
        self._dispatchers[endpoint] = dispatcher

    def detach(self, endpoint: str, dispatcher: Dispatcher) -> None:
        if self._dispatchers.get(endpoint) is dispatcher:
            del self._dispatchers[endpoint]

    def reconfigure(self, endpoint: Endpoint) -> None:
        """Apply ``endpoint``'s new definition to its running flow here, if one runs."""
        dispatcher = self._dispatchers.get(endpoint.name)
        if dispatcher is not None:
            dispatcher.reconfigure(endpoint)

    def blocked(self, endpoint: str, room: Blocked) -> None:
        job = room.job
        report = {
            "event_id": job.event_id,
            "partition": job.partition,
            "offset": job.offset,
            "reason": room.reason,
            "attempts": [attempt.as_dict() for attempt in room.attempts],
            "since": now(),
            "instance": self.instance,
        }
        self._spawn(self.writer.put(key(BLOCKED, endpoint, job.room_id), report))
        command = self.control.values.get(key(UNBLOCK, endpoint, job.room_id))
        if command is not None:
            self._unblock(endpoint, job.room_id, command)

    def finished(self, endpoint: str, job: Job) -> None:
        report = self.control.values.get(key(BLOCKED, endpoint, job.room_id))
        if report is not None and report.get("event_id") == job.event_id:
            self._spawn(self.writer.delete(key(BLOCKED, endpoint, job.room_id)))

    def delivered(self, endpoint: str, outcome: str) -> None:
        self._counts[endpoint, "failed" if outcome in _FAILED else "delivered"] += 1
        if outcome == "delivered":
            self._failing_since.pop(endpoint, None)
        elif outcome in _FAILING:
            self._failing_since.setdefault(endpoint, self._clock())

    def _unblock(self, endpoint: str, room: str, command: dict[str, Any]) -> None:
        dispatcher = self._dispatchers.get(endpoint)
        event_id, action = command.get("event_id"), command.get("action")
        if dispatcher is None or not isinstance(event_id, str) or action not in ("retry", "skip"):
            return
        if dispatcher.unblock(room, event_id, action):
            self._spawn(self.writer.delete(key(UNBLOCK, endpoint, room)))
            if action == "retry":  # no longer blocked: blocked again, it is reported again
                self._spawn(self.writer.delete(key(BLOCKED, endpoint, room)))

    def _heard(self, name: str, value: dict[str, Any] | None) -> None:
        kind, _, rest = name.partition("/")
        if kind == PAUSED:
            self._pauses.set()
            self._pauses = asyncio.Event()
            self._failing_since.pop(rest, None)  # resumed, it gets the whole time again
            disabled = value is not None and value.get("by") == DISABLED
            self.metrics.disabled.labels(rest).set(1 if disabled else 0)
        elif kind == UNBLOCK and value is not None:
            endpoint, _, room = rest.partition("/")
            self._unblock(endpoint, room, value)

    # -- failing endpoints ----------------------------------------------------------------------

    def failing_too_long(self, endpoints: Mapping[str, Endpoint]) -> dict[str, float]:
        """The running endpoints here that failed for longer than they allow, with since when."""
        at = self._clock()
        return {
            name: since
            for name, since in self._failing_since.items()
            if (endpoint := endpoints.get(name)) is not None
            and endpoint.disable_after_seconds is not None
            and at - since >= endpoint.disable_after_seconds
            and not self.paused(name)
        }

    async def disable_failing(self, endpoints: Callable[[], Mapping[str, Endpoint]], every: float) -> None:
        """Every ``every`` s, disable the endpoints that failed here for longer than they allow."""
        while True:
            await asyncio.sleep(every)
            for name, since in self.failing_too_long(endpoints()).items():
                failing_since = format_time(datetime.fromtimestamp(since, UTC))
                seconds = round(self._clock() - since)
                reason = f"no delivery succeeded for {seconds} s (failing since {failing_since})"
                record = {"at": now(), "by": DISABLED, "reason": reason, "instance": self.instance}
                log.warning("endpoint_disabled", endpoint=name, reason=reason)
                self.metrics.disabled_total.labels(name).inc()
                await self.writer.put(key(PAUSED, name), record)

    # -- rates ----------------------------------------------------------------------------------

    async def report_rates(self, endpoints: Callable[[], Collection[str]], every: float) -> None:
        """Publish this instance's delivery and error rates for each of ``endpoints()`` every ``every``
        s; remove each report when its endpoint goes, and all on exit."""
        reported: set[str] = set()
        try:
            while True:
                before = self._counts.copy()
                await asyncio.sleep(every)
                names = set(endpoints())
                for endpoint in sorted(reported - names):
                    await self.writer.delete(key(RATES, endpoint, self.instance))
                for endpoint in sorted(names):
                    counts = self._counts
                    rates = {
                        f"{what}_per_s": round((counts[endpoint, what] - before[endpoint, what]) / every, 3)
                        for what in ("delivered", "failed")
                    }
                    await self.writer.put(key(RATES, endpoint, self.instance), {**rates, "at": now()})
                reported = names
        finally:
            for endpoint in reported:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.writer.delete(key(RATES, endpoint, self.instance)))

    def _spawn(self, work: Coroutine[Any, Any, object]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("control_write_failed", error=repr(task.exception()))

    async def close(self) -> None:
        """Let the reports already started reach the broker."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
