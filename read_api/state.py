"""The read API's app-wide state, as one typed object: settings, the read store, the broker's admin client."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from confluent_kafka.admin import AdminClient
from prometheus_client import CollectorRegistry
from starlette.requests import Request
from starlette.responses import Response

from domain import InvalidCommand
from kernel.http.responses import problem
from kernel.position import Position
from kernel.settings import KafkaSettings
from kernel.topics import end_offsets
from read_api.settings import ReadApiSettings
from read_store.engines import create_engine
from read_store.position_watch import TooManyWaiters
from read_store.reader import ReadStore
from read_store.settings import ReadStoreSettings


class ReadApi:
    """What every route of the read API shares; its database engine lives while the app runs."""

    def __init__(self, settings: ReadApiSettings, store: ReadStoreSettings, kafka: KafkaSettings) -> None:
        self.settings = settings
        self.store_settings = store
        self.kafka = kafka
        self.registry = CollectorRegistry()
        self._reads: ReadStore | None = None
        self._admin: AdminClient | None = None
        # The log's ends, looked up once for every expired wait of the same moment.
        self._ends: tuple[float, dict[int, int] | None] | None = None
        self._ends_lookup: asyncio.Task[dict[int, int] | None] | None = None

    @classmethod
    def of(cls, request: Request) -> ReadApi:
        """The state of the app that serves ``request``."""
        state: ReadApi = request.app.state.read_api
        return state

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Open the read store and the admin client for as long as the app runs."""
        engine = create_engine(self.store_settings.url, schema=self.store_settings.db_schema)
        self._reads = ReadStore(engine, self.kafka.events_topic, self.settings.max_position_waiters)
        self._admin = AdminClient(self.kafka.client())
        try:
            yield
        finally:
            reads, self._reads, self._admin = self._reads, None, None
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

    async def caught_up(self, after_position: str | None) -> Response | None:
        """None when the read may go ahead; a problem when the projection is still behind."""
        if after_position is None:
            return None
        position = Position.parse(after_position)
        wait = self.settings.position_wait_seconds
        try:
            if await self.reads.wait_for(position, wait):
                return None
        except TooManyWaiters:
            return problem(
                503, "too-many-waiters", "Too many reads are waiting for the projection; retry shortly.",
                headers={"Retry-After": "1"},
            )  # fmt: skip
        ends = await self._recent_end_offsets()
        if ends is not None and position.offset >= ends.get(position.partition, 0):
            # Not lag: no write ever got this position.
            raise InvalidCommand("after_position", "is beyond the end of the event log")
        return problem(
            503,
            "projection-behind",
            "The projection has not reached that position yet.",
            f"waited {wait:g} s for position {position}; retry shortly",
            headers={"Retry-After": "1"},
            position=str(position),
        )

    async def projection(self) -> dict[str, Any]:
        """Per partition, the applied offset, the log end and the lag between them."""
        applied = await self.reads.positions()
        ends = await self._end_offsets()
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

    async def _recent_end_offsets(self, fresh_for: float = 0.5) -> dict[int, int] | None:
        """The log's ends as of at most ``fresh_for`` s ago: one lookup however many ask at once."""
        now = time.monotonic()
        if self._ends is not None and now - self._ends[0] < fresh_for:
            return self._ends[1]
        if self._ends_lookup is None or self._ends_lookup.done():
            self._ends_lookup = asyncio.create_task(self._end_offsets())
        ends = await asyncio.shield(self._ends_lookup)
        self._ends = (now, ends)
        return ends

    async def _end_offsets(self) -> dict[int, int] | None:
        if self._admin is None:
            raise RuntimeError("the read API is not running")
        return await end_offsets(self._admin, self.kafka.events_topic)
