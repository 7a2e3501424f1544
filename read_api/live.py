"""Live rooms over Server-Sent Events (decision 0025): a stream per connection, on the process's feed.

A stream registers with the feed before anything else, replays what its client missed (from the
``Last-Event-ID`` or ``after_position`` it resumes from) up to where the feed took over, then sends
what the feed buffered for it, each change once (``read_api.handover``). Bulkheads: a bounded
buffer per stream (a stream that falls behind is closed, never buffered further nor waited for),
a bound on the streams a process holds, a heartbeat, and the end of a stream when its token expires.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge
from sse_starlette import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import SendTimeoutError
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from domain.errors import InvalidCommand
from kernel.auth import Caller
from kernel.http.responses import problem
from kernel.position import Position, partition_of
from kernel.settings import KafkaSettings
from read_api.applied_feed import AppliedFeed, ResumeTooOld
from read_api.handover import Change, Handover, Subscription, parse_cursor, replay_ranges
from read_api.settings import ReadApiSettings
from read_api.tickets import Tickets
from read_store.reader import ReadStore

log = structlog.get_logger()

# How long a stream asked for waits for the feed to begin (its first start reads the broker).
_FEED_START_WAIT = 10.0
# A quiet stream looks at its token's expiry at least this often.
_LONGEST_WAIT = 60.0


class LiveMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.open = Gauge(
            "merlin_live_streams_open", "Live streams open in this process.",
            registry=registry, multiprocess_mode="livesum",
        )  # fmt: skip
        self.sent = Counter(
            "merlin_live_events_sent", "Changes sent on live streams, replayed or live.",
            ["source"], registry=registry,
        )  # fmt: skip
        self.lagged = Counter(
            "merlin_live_subscribers_lagged",
            "Live streams closed because their client fell a whole buffer behind.",
            registry=registry,
        )
        self.refused = Counter(
            "merlin_live_streams_refused",
            "Live streams refused: past the process's bound.",
            registry=registry,
        )
        self.stalled = Counter(
            "merlin_live_streams_stalled",
            "Live streams closed because their client took nothing within the send timeout.",
            registry=registry,
        )
        self.tickets = Counter(
            "merlin_live_tickets", "Live tickets issued, and refused when presented.",
            ["outcome"], registry=registry,
        )  # fmt: skip


class LiveRooms:
    """The live streams of one read API process, and the feed they share."""

    def __init__(
        self,
        settings: ReadApiSettings,
        kafka: KafkaSettings,
        reads: Callable[[], ReadStore],
        registry: CollectorRegistry,
    ) -> None:
        self.settings = settings
        self.metrics = LiveMetrics(registry)
        self.feed = AppliedFeed(kafka, reads, settings.live_batch, self._lagged)
        self.streams = 0
        self.tickets: Tickets | None = None  # set by the app, which knows the callers' keys

    def _lagged(self, subscription: Subscription) -> None:
        self.metrics.lagged.inc()
        log.info("live_subscriber_lagged", rooms=sorted(subscription.rooms))

    async def close(self) -> None:
        await self.feed.close()

    async def open(
        self,
        caller: Caller,
        rooms: list[str],
        cursor: str | None,
        field: str,
        check: Callable[[Position, str | None], Awaitable[None]],
    ) -> Response:
        """A stream of ``rooms`` for ``caller`` (already authorized), resuming after ``cursor`` (from
        ``field``); or a problem before any stream starts. ``check`` refuses a position no write had."""
        if self.streams >= self.settings.live_max_streams:
            self.metrics.refused.inc()
            return problem(
                503, "too-many-streams", "This process holds as many live streams as it may; retry shortly.",
                headers={"Retry-After": "1"},
            )  # fmt: skip
        resume = parse_cursor(cursor, field) if cursor else {}
        if not await self.feed.started(_FEED_START_WAIT):
            return problem(
                503,
                "unavailable",
                "The event log does not answer; retry later.",
                headers={"Retry-After": "1"},
            )
        partitions = self.feed.partitions or 1
        placed = {room: partition_of(room, partitions) for room in rooms}
        mine = set(placed.values())
        for partition, offset in resume.items():
            if partition not in mine:
                raise InvalidCommand(field, "is not a position of a change of these rooms")
            await check(Position(partition, offset), rooms[0] if len(rooms) == 1 else None)
        single = len(rooms) == 1
        # Registered before the response exists, so before its headers go out: a client that opens
        # a stream without an id, sees it open, then reads the room misses no change in between.
        self.streams += 1
        self.metrics.open.inc()
        subscription = self.feed.subscribe(frozenset(rooms), self.settings.live_buffer)
        ended = False

        def end() -> None:
            nonlocal ended
            if not ended:  # by the stream's own end, or by its response if the stream never began
                ended = True
                self.feed.unsubscribe(subscription)
                self.streams -= 1
                self.metrics.open.dec()

        return _LiveResponse(
            self.metrics,
            end,
            self._events(caller, subscription, mine, resume, single, end),
            ping=self.settings.live_heartbeat_seconds,
            ping_message_factory=lambda: ServerSentEvent(comment="heartbeat"),
            send_timeout=self.settings.live_send_timeout_seconds,
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def _events(
        self,
        caller: Caller,
        subscription: Subscription,
        mine: set[int],
        resume: dict[int, int],
        single: bool,
        end: Callable[[], None],
    ) -> AsyncIterator[ServerSentEvent]:
        rooms = subscription.rooms
        handover = Handover(subscription, resume)
        sent = self.metrics.sent

        def event(change: Change) -> ServerSentEvent:
            return ServerSentEvent(
                data=orjson.dumps(change.message).decode(),
                event=change.event_type,
                id=str(change.position) if single else handover.cursor(),
            )

        try:
            try:
                ranges = replay_ranges(resume, subscription.start, mine)
                async for changes in self.feed.replay(rooms, ranges):
                    for change in handover.admit(changes):
                        sent.labels("replay").inc()
                        yield event(change)
            except ResumeTooOld as exc:
                log.info("live_resume_too_old", reason=str(exc))
                yield _notice("reload", "The log no longer holds what this stream would resume from: "
                              "reload the room, then stream it from now.")  # fmt: skip
                return
            while True:
                if subscription.lagging:
                    yield _notice(
                        "lagged",
                        "This stream fell too far behind and is closed: resume from the last event id.",
                    )
                    return
                for change in handover.live():
                    sent.labels("live").inc()
                    yield event(change)
                if subscription.lagging:
                    continue
                left = _LONGEST_WAIT if caller.expires is None else caller.expires - time.time()
                if left <= 0:
                    yield _notice("expired", "The token has expired: stream again with a new one.")
                    return
                await subscription.arrival(min(left, _LONGEST_WAIT))
        finally:
            end()


class _LiveResponse(EventSourceResponse):
    """sse-starlette's response, for which a client that takes nothing within the send timeout is no
    error of the service's: its connection is closed (by uvicorn, once the app returns)."""

    def __init__(self, metrics: LiveMetrics, end: Callable[[], None], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._metrics = metrics
        self._end = end

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except SendTimeoutError:
            self._metrics.stalled.inc()
            log.info("live_stream_stalled", reason="the client took nothing within the send timeout")
        finally:
            self._end()  # the stream's subscription, even when its generator never ran


def _notice(kind: str, detail: str) -> ServerSentEvent:
    return ServerSentEvent(data=orjson.dumps({"detail": detail}).decode(), event=kind)
