"""The metrics listener of a parent of API workers (``--workers N``): one answer for all of them.

Each worker keeps its metrics in files of one folder (prometheus_client's
multiprocess mode); at each scrape the parent reads them with a
``MultiProcessCollector`` on a registry made for that scrape, as
prometheus_client advises. The per-process collectors do not work across
processes, so the parent adds each worker's ``process_*`` itself, labelled
``worker`` (``kernel.metrics.WorkersProcessCollector``), with its own as
``worker="parent"``; ``python_gc_*`` are not exported in this mode. A worker
that exited is marked dead, so its ``live*`` gauges leave the answer.
``/readyz`` is ready while every worker process runs (each one's own readiness
is on the main port).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from prometheus_client import CollectorRegistry, PlatformCollector, multiprocess

from kernel.metrics import WorkersProcessCollector
from kernel.operations_listener import serving
from merlin.process_group import Child


class _Workers:
    """The running workers' process ids; marks the files of those gone dead."""

    def __init__(self, children: Sequence[Child], path: str) -> None:
        self._children = children
        self._path = path
        self._seen: set[int] = set()

    def running(self) -> dict[str, int]:
        found = {c.name: c.process.pid for c in self._children if c.process is not None}
        for pid in self._seen - set(found.values()):
            multiprocess.mark_process_dead(pid, self._path)  # type: ignore[no-untyped-call]
        self._seen = set(found.values())
        return found

    def registry(self) -> CollectorRegistry:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self._path)  # type: ignore[no-untyped-call]
        registry.register(WorkersProcessCollector(self.running))
        PlatformCollector(registry=registry)
        return registry

    async def checks(self) -> dict[str, bool]:
        return {"workers": all(c.process is not None for c in self._children)}


@asynccontextmanager
async def serving_workers(host: str, port: int, children: Sequence[Child], path: str) -> AsyncIterator[None]:
    """Serve the metrics of ``children`` (their files in ``path``) on ``host:port`` while the block runs."""
    workers = _Workers(children, path)
    async with serving(host, port, workers.registry, workers.checks):
        yield
