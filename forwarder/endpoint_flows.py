"""One flow per defined endpoint, following the definitions as they change.

A new definition starts its endpoint's flow; a changed one is applied to the
running flow in place (nothing in flight is dropped: the next attempt calls the
new URL with the new secrets, the window and buffer apply at once); a deleted
one stops its flow, which commits what it finished. No other flow is touched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from forwarder.endpoint_catalog import EndpointCatalog
from webhooks.endpoints import Endpoint

log = structlog.get_logger()

RunEndpoint = Callable[[str, asyncio.Event], Coroutine[Any, Any, None]]


class EndpointFlows:
    """Starts, reconfigures and stops each endpoint's flow as ``catalog`` changes."""

    def __init__(
        self,
        catalog: EndpointCatalog,
        run: RunEndpoint,
        reconfigure: Callable[[Endpoint], None],
        gone: Callable[[str], None],
    ) -> None:
        self.catalog = catalog
        self._run = run
        self._reconfigure = reconfigure
        self._gone = gone
        self._ended: dict[str, asyncio.Event] = {}  # per running flow: set to stop it
        self._group: asyncio.TaskGroup | None = None
        self._stopping = False

    async def run(self, stop: asyncio.Event) -> None:
        """Run every defined endpoint's flow, following changes, until ``stop``."""
        async with asyncio.TaskGroup() as group:
            self._group = group
            for name in sorted(self.catalog.endpoints):
                self._start(name)
            stopped = asyncio.ensure_future(stop.wait())
            try:
                while not stopped.done():
                    change = asyncio.ensure_future(self.catalog.changed())
                    await asyncio.wait({change, stopped}, return_when=asyncio.FIRST_COMPLETED)
                    if change.done():
                        self._settle(change.result())
                    else:
                        change.cancel()
            finally:
                stopped.cancel()
                self._stopping = True
                for ended in self._ended.values():
                    ended.set()

    def _settle(self, name: str) -> None:
        endpoint = self.catalog.endpoints.get(name)
        running = name in self._ended
        if endpoint is None and running:
            log.info("endpoint_stopping", endpoint=name, reason="deleted")
            self._ended[name].set()
        elif endpoint is not None and not running:
            self._start(name)
        elif endpoint is not None:
            self._reconfigure(endpoint)
            log.info("endpoint_reconfigured", endpoint=name, version=self.catalog.versions.get(name))

    def _start(self, name: str) -> None:
        assert self._group is not None
        ended = self._ended[name] = asyncio.Event()
        log.info("endpoint_starting", endpoint=name, version=self.catalog.versions.get(name))
        task = self._group.create_task(self._run(name, ended), name=f"endpoint:{name}")
        task.add_done_callback(lambda done: self._finished(name, ended, done))

    def _finished(self, name: str, ended: asyncio.Event, task: asyncio.Task[None]) -> None:
        if self._ended.get(name) is ended:
            del self._ended[name]
        if self._stopping or task.cancelled() or task.exception() is not None:
            return  # the worker is stopping, or the task group is failing with it
        if name in self.catalog.endpoints:  # deleted, then defined again while it stopped
            self._start(name)
        else:
            self._gone(name)
