"""The forwarder's /healthz, /readyz and /metrics on a real broker: ready when it is, lag per partition."""

from __future__ import annotations

from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from merlin.local.service_processes import Services, eventually, free_port


async def get(url: str) -> httpx.Response | None:
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            return await client.get(url)
    except httpx.TransportError:
        return None


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


async def test_a_working_forwarder_is_ready_and_reports_its_lag_per_partition(
    sqlite_services: Services,
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    sqlite_services.forwarder(MERLIN_FORWARDER_METRICS_PORT=str(port))
    write, read = await sqlite_services.write_api(), await sqlite_services.read_api()

    async def ready() -> dict[str, Any] | None:
        answer = await get(f"{base}/readyz")
        return answer.json() if answer is not None and answer.status_code == 200 else None

    readiness = await eventually(ready, 60, "the forwarder ready")
    assert readiness == {
        "status": "ready",
        "checks": {"settings": True, "flow": True, "polling": True, "kafka": True, "read_store": True},
        "subscription": {"state": "ok", "renewals": 0},
    }
    health = await get(f"{base}/healthz")
    assert health is not None
    assert (health.status_code, health.json()) == (200, {"status": "ok"})

    async with httpx.AsyncClient(headers=sqlite_services.headers(), timeout=30) as client:
        for n in range(30):
            answer = await client.post(
                f"{write.url}/v1/rooms/room-{n}/messages", json={"sender_id": "u1", "body": f"m{n}"}
            )
            assert answer.status_code == 202, answer.text
        last = answer.json()["position"]
        page = await client.get(f"{read.url}/v1/rooms/room-29/messages", params={"after_position": last})
        assert page.status_code == 200, page.text

    group = f"forwarder-{sqlite_services.kafka.events_topic}"

    async def caught_up() -> dict[tuple[tuple[str, str], ...], float] | None:
        answer = await get(f"{base}/metrics")
        assert answer is not None
        lag = samples(answer.text, "merlin_forwarder_lag_records")
        records = samples(answer.text, "merlin_forwarder_records_total")
        return lag if records.get((), 0) >= 30 and lag and not any(lag.values()) else None

    lag = await eventually(caught_up, 30, "every partition's lag back to 0 after the writes")
    topic = sqlite_services.kafka.events_topic
    assert set(lag) == {(("group", group), ("partition", str(p)), ("topic", topic)) for p in range(3)}


async def test_a_forwarder_whose_store_is_down_is_alive_but_not_ready(sqlite_services: Services) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    forwarder = sqlite_services.forwarder(
        MERLIN_FORWARDER_METRICS_PORT=str(port),
        MERLIN_READ_STORE_URL=f"postgresql://merlin@127.0.0.1:{free_port()}/nowhere",
    )

    async def answering() -> httpx.Response | None:
        assert forwarder.process.poll() is None, forwarder.output()
        return await get(f"{base}/readyz")

    not_ready = await eventually(answering, 60, "the forwarder answering")
    assert not_ready.status_code == 503
    assert not_ready.headers["content-type"] == "application/problem+json"
    assert not_ready.headers["retry-after"] == "1"
    problem = not_ready.json()
    assert problem["checks"]["read_store"] is False
    assert "read_store" in problem["detail"]
    alive = await get(f"{base}/healthz")
    assert alive is not None
    assert alive.status_code == 200
