"""Every service's registry has the process and runtime collectors; its metrics listener needs no token."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kernel.metrics import WorkersProcessCollector, service_registry
from kernel.operations_listener import serving
from merlin.local.service_processes import free_port
from merlin.process_group import Child
from merlin.worker_metrics import serving_workers


def _names(text: str) -> set[str]:
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def test_a_services_registry_has_process_platform_and_gc_metrics() -> None:
    names = _names(generate_latest(service_registry()).decode())
    assert {"process_resident_memory_bytes", "process_cpu_seconds_total", "python_info"} <= names
    assert "python_gc_collections_total" in names


def test_each_worker_has_its_process_series() -> None:
    registry = CollectorRegistry()
    registry.register(WorkersProcessCollector(lambda: {"write-api-0": os.getpid()}))
    found = {
        sample.labels["worker"]
        for family in registry.collect()
        for sample in family.samples
        if sample.name == "process_resident_memory_bytes"
    }
    assert found == {"parent", "write-api-0"}


async def test_the_listener_serves_metrics_health_and_readiness_without_a_token() -> None:
    registry = service_registry()
    Counter("merlin_example", "An example", registry=registry).inc()
    ready = {"kafka": True}

    async def checks() -> dict[str, bool]:
        return dict(ready)

    port = free_port()
    async with serving("127.0.0.1", port, lambda: registry, checks), httpx.AsyncClient() as client:
        base = f"http://127.0.0.1:{port}"
        metrics = await client.get(f"{base}/metrics")
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain")
        assert {"merlin_example_total", "process_resident_memory_bytes"} <= _names(metrics.text)
        assert (await client.get(f"{base}/healthz")).json() == {"status": "ok"}
        assert (await client.get(f"{base}/readyz")).json() == {"status": "ready", "checks": {"kafka": True}}
        ready["kafka"] = False
        answer = await client.get(f"{base}/readyz")
        assert answer.status_code == 503
        assert answer.headers["retry-after"] == "1"
        assert answer.json()["detail"] == "not answering: kafka"


async def test_a_service_that_cannot_tell_is_not_ready() -> None:
    async def starting() -> dict[str, bool]:
        raise RuntimeError("the write API is not running")

    port = free_port()
    async with serving("127.0.0.1", port, CollectorRegistry, starting), httpx.AsyncClient() as client:
        answer = await client.get(f"http://127.0.0.1:{port}/readyz")
    assert answer.status_code == 503
    assert "not running" in answer.json()["detail"]


async def test_a_parent_answers_for_its_workers_files(tmp_path: Path) -> None:
    # A worker's counter as prometheus_client's multiprocess mode leaves it in the folder.
    from prometheus_client import values

    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
    try:
        values.ValueClass = values.get_value_class()
        Counter("merlin_worker_example", "From a worker", registry=None).inc(3)
    finally:
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]
        values.ValueClass = values.get_value_class()
    children = [Child("write-api-0", ["true"], {})]
    port = free_port()
    async with serving_workers("127.0.0.1", port, children, str(tmp_path)), httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
        ready = await client.get(f"http://127.0.0.1:{port}/readyz")
    families = {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert families["merlin_worker_example_total"] == 3
    assert "process_resident_memory_bytes" in families  # the parent's own, labelled worker="parent"
    assert ready.status_code == 503  # the child is not running
