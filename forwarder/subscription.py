"""A subscription to the settings topic that checks itself.

A reader whose connection went quiet without breaking hears nothing and looks
healthy: librdkafka waits out its socket timeout (a minute by default) before
it reconnects, and a worker on stale settings delivers to an old URL meanwhile.
So each instance writes a ping keyed by its own id every ``every`` seconds and
expects to read it back within ``within``; when it does not, it renews its
reader (a new consumer, new connections, reading on from where it got to) and
its pinger (a producer of its own, which a dead connection holds up just the
same), logs it and counts it, and keeps trying every ``within`` until a ping
comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import structlog

from kernel.control import PING, Listener, key, now

log = structlog.get_logger()

State = Literal["starting", "ok", "stalled"]

_KEPT = 1000  # unheard pings remembered


class Reader(Protocol):
    """What the check needs of the settings topic's reader (``ControlLog``)."""

    def listen(self, listener: Listener) -> None: ...
    def renew(self) -> None: ...


class Writer(Protocol):
    """What the check needs of its writer (``ControlWriter``)."""

    def put(self, name: str, value: dict[str, Any]) -> Coroutine[Any, Any, object]: ...
    def delete(self, name: str) -> Coroutine[Any, Any, object]: ...
    async def close(self) -> None: ...


@dataclass(frozen=True)
class Heard:
    """What the check tells its owner (for metrics)."""

    round_trip: float | None = None  # a ping came back after this many seconds
    renewed: bool = False  # the reader was renewed


class SubscriptionCheck:
    """Pings this instance through the settings topic and renews the reader that stops hearing them."""

    def __init__(
        self,
        control: Reader,
        pinger: Callable[[], Writer],
        instance: str,
        every: float,
        within: float,
        report: Callable[[Heard], None] = lambda _heard: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.control = control
        self._pinger = pinger
        self._writer = pinger()
        self.name = key(PING, instance)
        self.every, self.within = every, within
        self.state: State = "starting"
        self.renewals = 0
        self._report = report
        self._clock = clock
        # Pings of an earlier process under the same instance id are not this one's.
        self._run = uuid.uuid4().hex
        self._seq = 0
        self._sent: dict[int, float] = {}  # pings not read back yet, by sequence, when sent
        self._renewed_at = 0.0  # a reader renewed gets a whole bound to hear a ping
        self._sending: set[asyncio.Task[None]] = set()
        control.listen(self._heard)

    def status(self) -> dict[str, Any]:
        """The subscription's state, for ``/readyz``."""
        return {"state": self.state, "renewals": self.renewals}

    def _heard(self, name: str, value: dict[str, Any] | None) -> None:
        if name != self.name or value is None or value.get("run") != self._run:
            return
        seq = value.get("seq")
        if not isinstance(seq, int) or seq not in self._sent:
            return
        round_trip = self._clock() - self._sent[seq]
        self._sent = {n: at for n, at in self._sent.items() if n > seq}
        if self.state != "ok":
            log.info("settings_subscription_ok", round_trip_ms=round(round_trip * 1000, 1))
        self.state = "ok"
        self._report(Heard(round_trip=round_trip))

    async def run(self) -> None:
        """Ping, and renew the reader whenever a ping is not back in time, until cancelled."""
        try:
            while True:
                self._ping()
                await asyncio.sleep(self.every)
                self._check()
        finally:
            for task in self._sending:
                task.cancel()

    def _ping(self) -> None:
        self._seq += 1
        self._sent[self._seq] = self._clock()
        if len(self._sent) > _KEPT:  # long unheard: renewals since then set the clock, not these
            del self._sent[min(self._sent)]
        value = {"run": self._run, "seq": self._seq, "at": now()}
        # Not awaited here: a producer that cannot reach the broker must not stop the check.
        self._spawn(self._send(value))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, value: dict[str, Any]) -> None:
        try:
            await asyncio.wait_for(self._writer.put(self.name, value), self.within)
        except Exception as exc:  # the check below sees the ping missing and says so
            log.warning("settings_ping_unsent", error=str(exc) or type(exc).__name__)

    def _check(self) -> None:
        if not self._sent:
            return
        at = self._clock()
        if at - max(min(self._sent.values()), self._renewed_at) < self.within:
            return
        self.state = "stalled"
        self.renewals += 1
        log.warning(
            "settings_subscription_renewed",
            reason=f"no ping read back within {self.within:g} s",
            renewals=self.renewals,
        )
        self.control.renew()
        old, self._writer = self._writer, self._pinger()
        self._spawn(old.close())
        self._renewed_at = at
        self._report(Heard(renewed=True))

    async def close(self) -> None:
        """Delete this instance's ping, so the topic does not keep it, and close the pinger."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._writer.delete(self.name), 5.0)
        await self._writer.close()
