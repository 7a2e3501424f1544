"""The read API's app-wide state, as one typed object: settings, the read store, the broker's admin client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any

import structlog
from confluent_kafka.admin import AdminClient
from starlette.requests import Request
from starlette.responses import Response

from domain import InvalidCommand
from kernel import tracing
from kernel.auth import ALL_ROOMS, ANYONE, Caller
from kernel.http.responses import problem
from kernel.metrics import service_registry
from kernel.position import CRC32_PARTITIONERS, Position, partition_of
from kernel.settings import KafkaSettings
from kernel.topics import end_offsets
from read_api.live import LiveRooms
from read_api.log_ends import Ends, LogEnds
from read_api.settings import ReadApiSettings
from read_store.engines import create_engine
from read_store.position_watch import CallerWaitsTooMuch, TooManyWaiters
from read_store.reader import ReadStore
from read_store.settings import ReadStoreSettings

log = structlog.get_logger()


class ReadApi:
    """What every route of the read API shares; its database engine lives while the app runs."""

    def __init__(self, settings: ReadApiSettings, store: ReadStoreSettings, kafka: KafkaSettings) -> None:
        self.settings = settings
        self.store_settings = store
        self.kafka = kafka
        self.registry = service_registry()
        self._reads: ReadStore | None = None
        self._admin: AdminClient | None = None
        self.ends = LogEnds(self._end_offsets)
        # Whether the write API's producer places rooms as ``partition_of`` says, so that a
        # position on another partition can be told from a room's own.
        partitioner = kafka.client_config.get("partitioner", "consistent_random")
        self.rooms_placed = partitioner in CRC32_PARTITIONERS
        self.live = LiveRooms(settings, kafka, lambda: self.reads, self.registry)

    @classmethod
    def of(cls, request: Request) -> ReadApi:
        """The state of the app that serves ``request``."""
        state: ReadApi = request.app.state.read_api
        return state

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Open the read store and the admin client for as long as the app runs."""
        engine = create_engine(self.store_settings.url, schema=self.store_settings.db_schema)
        self._reads = ReadStore(
            engine,
            self.kafka.events_topic,
            self.settings.max_position_waiters,
            self.settings.max_position_waiters_per_caller,
        )
        self._admin = AdminClient(self.kafka.client())
        if not self.rooms_placed:
            log.warning(
                "after_position_partitions_unchecked",
                reason="MERLIN_KAFKA_CLIENT_CONFIG names a partitioner other than librdkafka's default",
            )
        self.ends.refresh()  # the partition count, known before the first read needs it
        try:
            yield
        finally:
            reads, self._reads = self._reads, None
            await self.live.close()
            await self.ends.close()
            self._admin = None
            await reads.close()

    @property
    def reads(self) -> ReadStore:
        if self._reads is None:
            raise RuntimeError("the read API is not running")
        return self._reads

    async def readiness(self) -> dict[str, bool]:
        try:
            await self.reads.ping()
        except Exception:  # any failure to reach the store means not ready
            return {"read_store": False}
        return {"read_store": True}

    async def caught_up(
        self, after_position: str | None, caller: Caller, room: str | None = None
    ) -> Response | None:
        """None when the read may go ahead; a problem when the projection is still behind.

        ``room`` is the room read; None for an event, whose room is not known
        before it is found. A position the caller's write could not have had is
        ``InvalidCommand`` at once (422), before any wait.
        """
        if after_position is None:
            return None
        position = Position.parse(after_position)
        await self.refuse_impossible(position, caller, room)
        if not tracing.ENABLED:
            return await self._wait(position, caller)
        with tracing.tracer().start_as_current_span(
            "wait for projection",
            attributes={
                "merlin.position": str(position),
                "merlin.wait.limit_s": self.settings.position_wait_seconds,
            },
        ) as span:
            answer = await self._wait(position, caller)
            span.set_attribute("merlin.wait.caught_up", answer is None)
            if answer is not None:
                span.set_attribute("merlin.wait.answer", answer.status_code)
            return answer

    async def _wait(self, position: Position, caller: Caller) -> Response | None:
        """Wait for the projection to reach ``position``: None once it has, a problem if it does not."""
        wait = self.settings.position_wait_seconds
        try:
            # Without authentication every caller is the same one: only the process's bound holds.
            if await self.reads.wait_for(position, wait, None if caller is ANYONE else caller.subject):
                return None
        except CallerWaitsTooMuch:
            return problem(
                429, "too-many-waiting-reads",
                "This caller already has as many reads waiting for the projection as it may; "
                "retry once one is answered.",
                headers={"Retry-After": "1"},
            )  # fmt: skip
        except TooManyWaiters:
            return problem(
                503, "too-many-waiters", "Too many reads are waiting for the projection; retry shortly.",
                headers={"Retry-After": "1"},
            )  # fmt: skip
        return problem(
            503,
            "projection-behind",
            "The projection has not reached that position yet.",
            f"waited {wait:g} s for position {position}; retry shortly",
            headers={"Retry-After": "1"},
            position=str(position),
        )

    async def refuse_impossible(self, position: Position, caller: Caller, room: str | None) -> None:
        """Refuse at once a position on a partition none of the caller's rooms is on, or past the log's end.

        A position on another partition is refused the same way whatever that
        partition holds: waiting for it, or answering it by the projection's
        progress, would tell the caller how many writes rooms it may not read
        have had. Past the end, no write had it: waiting would only hold a place.
        """
        partitions = self.ends.partitions
        if partitions is None:
            await self.ends.fresh()
            partitions = self.ends.partitions
        # Unknown while the broker has not answered since the start: the wait is bounded all the same.
        if partitions is not None and self.rooms_placed:
            if room is not None:
                if position.partition != partition_of(room, partitions):
                    raise InvalidCommand("after_position", "is not the position of a write to this room")
            elif ALL_ROOMS not in caller.rooms and position.partition not in _partitions_of(
                caller.rooms, partitions
            ):
                raise InvalidCommand(
                    "after_position", "is not the position of a write to a room this token covers"
                )
        if self.reads.reached(position):
            return  # applied, so written: no need to ask where the log ends
        end = self.ends.end(position.partition)
        if end is not None and position.offset < end:
            return
        # Past the end as last seen: written since, or never. Only a lookup begun now can say which.
        if await self.ends.fresh() is None:
            return  # the broker does not answer: the wait decides
        end = self.ends.end(position.partition)
        if end is None or position.offset >= end:
            raise InvalidCommand("after_position", "is beyond the end of the event log")

    async def projection(self) -> dict[str, Any]:
        """Per partition, the applied offset, the log end and the lag between them."""
        applied = await self.reads.positions()
        ends = await self.ends.fresh()
        partitions = []
        for partition in sorted(set(applied) | set(ends or {})):
            done = applied.get(partition, -1)
            end = None if ends is None else ends.get(partition)
            partitions.append(
                {
                    "partition": partition,
                    "applied_offset": done,
                    "end_offset": end,
                    "lag": None if end is None else max(0, end - (done + 1)),
                }
            )
        total = None if ends is None else sum(p["lag"] or 0 for p in partitions)
        return {"topic": self.kafka.events_topic, "partitions": partitions, "lag": total}

    async def _end_offsets(self) -> Ends | None:
        if self._admin is None:
            raise RuntimeError("the read API is not running")
        return await end_offsets(self._admin, self.kafka.events_topic)


@lru_cache(maxsize=1024)
def _partitions_of(rooms: frozenset[str], partitions: int) -> frozenset[int]:
    """The partitions that hold the events of ``rooms``: a token's rooms, computed once per token."""
    return frozenset(partition_of(room, partitions) for room in rooms)
