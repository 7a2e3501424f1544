"""What an endpoint's dispatcher works on, and the one port by which its work leaves it.

A ``Job`` is one event for one endpoint; a ``Blocked`` room waits for an
operator. The dispatcher tells what became of its jobs through
``DispatchReport`` and nothing else: the delivering role
(``forwarder.delivering``) implements it and fans each report out to the
ledger, the metrics and the operators' controls.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal, Protocol

from webhooks.endpoints import Endpoint
from webhooks.sending import Attempt

# How a job's delivery ended, when it did not block its room.
Ended = Literal["delivered", "dead_lettered", "skipped"]


@dataclass(frozen=True, slots=True)
class Job:
    partition: int
    offset: int
    room_id: str
    event_id: str
    body: bytes  # the event envelope exactly as it is in the log
    generation: int  # the assignment it belongs to; stale after a rebalance
    reread: bool = False  # read again from the log for a parked room: its pin stands for it
    # The event's trace context, the record's W3C headers as they are (read only with tracing on).
    traceparent: str | None = None
    tracestate: str | None = None


@dataclass(frozen=True, slots=True)
class Blocked:
    """A room held by its head event, which failed for good."""

    job: Job
    reason: str
    attempts: list[Attempt]
    since: float  # time.time() when it blocked


class DispatchReport(Protocol):
    """What a dispatcher tells of its jobs."""

    def finished(self, job: Job) -> None:
        """The endpoint needs nothing more of ``job``'s record (sent, dead-lettered, skipped, or left
        to a re-read whose first event stands for it): the commit may pass it."""
        ...

    async def dead_letter(self, job: Job, endpoint: Endpoint, reason: str, attempts: list[Attempt]) -> None:
        """Send ``job`` to the dead-letter topic, as ``endpoint`` failed it; return once acknowledged."""
        ...

    def ended(self, job: Job, outcome: Ended, seconds: float) -> None:
        """``job``'s delivery ended in ``outcome``, ``seconds`` after it started (retries included)."""
        ...

    def blocked(self, room: Blocked, seconds: float) -> None:
        """A room's head event failed for good after ``seconds``: the room waits for an operator."""
        ...


def surface(task: asyncio.Task[None], failure: asyncio.Future[None]) -> None:
    """Surface a dispatcher task's unexpected crash on ``failure``, so the dispatcher's supervisor sees it."""
    if task.cancelled() or failure.done():
        return
    exc = task.exception()
    if exc is not None:
        failure.set_exception(exc)
