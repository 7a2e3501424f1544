"""Whatever reaches the settings topic, a forwarder stays up and ready: endpoints defined and deleted
faster than their flows start, and records of any bytes or any JSON under every kind of key."""

from __future__ import annotations

import random
from typing import Any

import httpx
import orjson
from confluent_kafka import Producer

from merlin.local.service_processes import Service, Services, eventually, free_port
from tests.downstream import Downstream
from tests.integration.hooks import SECRET, all_delivered, write_messages
from tests.integration.test_forwarder_health import get, samples
from tests.integration.test_live_endpoints import FAST_RETRY, ROOMS, admin_client, started_forwarders

KINDS = ["endpoint/hook", "endpoint/ghost", "paused/hook", "blocked/hook/room-1", "unblock/hook/room-1",
         "rates/hook/worker-1", "ping/worker-1", "nothing/at-all", "endpoint", "paused/"]  # fmt: skip


async def ready(base: str) -> dict[str, Any] | None:
    answer = await get(f"{base}/readyz")
    return answer.json() if answer is not None and answer.status_code == 200 else None


async def delivers(services: Services, admin: httpx.AsyncClient, url: str, name: str = "hook") -> None:
    """``name`` defined now delivers what is written next, to every room."""
    defined = await admin.put(
        f"/v1/admin/endpoints/{name}",
        json={"url": f"{url}/hooks/{name}", "secret": SECRET, "retry": FAST_RETRY},
    )
    assert defined.status_code in (200, 201), defined.text
    write = await services.write_api()
    await all_delivered(url, await write_messages(write, ROOMS, 2))


def standing(forwarder: Service) -> None:
    assert forwarder.process.poll() is None, f"the forwarder exited:\n{forwarder.output()[-3000:]}"
    assert "Traceback" not in forwarder.output(), forwarder.output()[-3000:]
    assert not forwarder.logged("flow_crashed")


async def test_endpoints_defined_and_deleted_faster_than_their_flows_start_take_no_forwarder_down(
    sqlite_services: Services, downstream: tuple[Downstream, str]
) -> None:
    _, url = downstream
    forwarders = await started_forwarders(sqlite_services, 2)
    async with admin_client(sqlite_services) as admin:
        for n in range(12):
            name = "flash" if n % 2 else f"flash-{n}"
            body = {"url": f"{url}/hooks/{name}", "secret": SECRET}
            assert (await admin.put(f"/v1/admin/endpoints/{name}", json=body)).status_code in (200, 201)
            assert (await admin.delete(f"/v1/admin/endpoints/{name}")).status_code == 204
        await delivers(sqlite_services, admin, url)
    for forwarder in forwarders:
        standing(forwarder)
        assert forwarder.logged("endpoint_starting")  # the definitions did reach it


def _records(seed: int, count: int) -> list[tuple[bytes, bytes | None]]:
    """``count`` records of any kind: bytes, JSON of any type, and records of a kind's shape gone wrong."""
    rng = random.Random(seed)

    def any_json(depth: int = 0) -> Any:
        shapes = [
            lambda: None,
            lambda: rng.choice([True, False]),
            lambda: rng.randint(-(2**63), 2**63 - 1),
            lambda: rng.uniform(-1e9, 1e9),
            lambda: "".join(chr(rng.randrange(1, 0x3000)) for _ in range(rng.randrange(12))),
            lambda: [any_json(depth + 1) for _ in range(rng.randrange(4))],
            lambda: {str(rng.randrange(99)): any_json(depth + 1) for _ in range(rng.randrange(4))},
            lambda: {field: any_json(depth + 1) for field in rng.sample(FIELDS, rng.randrange(1, 6))},
        ]
        return shapes[rng.randrange(len(shapes) if depth < 3 else 5)]()

    records = []
    for _ in range(count):
        kind = rng.choice(KINDS)
        value: bytes | None = rng.choice(
            [
                rng.randbytes(rng.randrange(40)),
                orjson.dumps(any_json()),
                orjson.dumps({field: any_json(1) for field in FIELDS if rng.random() < 0.7}),
            ]
        )
        records.append((kind.encode(), value))
    return records


# The fields of every kind of record (kernel.control, webhooks.catalog), for values that look right.
FIELDS = ["schema", "version", "added_at", "updated_at", "definition", "url", "secrets", "at", "by", "reason",
          "instance", "event_id", "partition", "offset", "attempts", "since", "action", "delivered_per_s",
          "failed_per_s", "run", "seq"]  # fmt: skip


async def test_records_of_any_bytes_or_json_under_every_kind_of_key_leave_the_forwarder_up_and_ready(
    sqlite_services: Services, downstream: tuple[Downstream, str]
) -> None:
    _, url = downstream
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    forwarder = sqlite_services.forwarder(MERLIN_FORWARDER_METRICS_PORT=str(port))
    await eventually(lambda: ready(base), 60, "the forwarder ready")
    seed = random.randrange(2**32)
    producer = Producer({"bootstrap.servers": sqlite_services.kafka.bootstrap_servers})
    for raw_key, raw_value in _records(seed, 600):
        producer.produce(sqlite_services.kafka.settings_topic, raw_value, raw_key)
    assert producer.flush(30) == 0
    async with admin_client(sqlite_services) as admin:
        # The admin API reads the same records: what it shows must not fail either.
        listed = await admin.get("/v1/admin/endpoints")
        assert listed.status_code == 200, (seed, listed.text)
        # About one run in five, a record under "paused/hook" is a well-formed pause (its one
        # required field is a string), which the forwarder rightly obeys: the operator resumes.
        defined = await admin.put(
            "/v1/admin/endpoints/hook", json={"url": f"{url}/hooks/hook", "secret": SECRET}
        )
        assert defined.status_code in (200, 201), (seed, defined.text)
        assert (await admin.post("/v1/admin/endpoints/hook/resume")).status_code == 200, seed
        await delivers(sqlite_services, admin, url)
        assert (await admin.get("/v1/admin/endpoints/hook/status")).status_code == 200
        metrics = await admin.get("/metrics")
        assert samples(metrics.text, "merlin_settings_records_skipped_total"), seed
    standing(forwarder)
    assert await ready(base) is not None, seed
    exported = await get(f"{base}/metrics")
    assert exported is not None
    assert sum(samples(exported.text, "merlin_settings_records_skipped_total").values()) > 0, seed
