"""Every service's Prometheus registry starts with the process and runtime collectors.

``process_*`` (CPU, memory, open descriptors, start time, from ``/proc``),
``python_info`` and ``python_gc_*`` come from prometheus_client's own
collectors. Under ``PROMETHEUS_MULTIPROC_DIR`` (``--workers N``) a worker's
registry is never what is exposed (the ``MultiProcessCollector`` reads the
workers' files, and prometheus_client documents that per-process collectors do
not work across processes; its ``GCCollector`` registers nothing there): the
parent's metrics listener exports the workers' ``process_*`` itself, one series
per worker (``WorkersProcessCollector``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector


def service_registry() -> CollectorRegistry:
    """A registry of one's own, with the process, platform and garbage-collector collectors in it."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class WorkersProcessCollector(Collector):
    """``process_*`` of each of a parent's worker processes, labelled ``worker``, and the parent's own.

    ``workers`` gives, when scraped, each running worker's name and process id.
    """

    def __init__(self, workers: Callable[[], Mapping[str, int]]) -> None:
        self._workers = workers

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        processes: dict[str, int | str] = {"parent": "self", **self._workers()}
        for worker, pid in processes.items():
            for family in ProcessCollector(pid=lambda pid=pid: pid, registry=None).collect():  # type: ignore[misc]
                merged = families.get(family.name)
                if merged is None:
                    merged = families[family.name] = Metric(family.name, family.documentation, family.type)
                for sample in family.samples:
                    merged.add_sample(sample.name, {**sample.labels, "worker": worker}, sample.value)
        return list(families.values())
