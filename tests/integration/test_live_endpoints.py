"""Endpoints defined, changed and deleted at runtime through the admin API, on a real broker, with
several forwarder processes: every instance follows the settings topic."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from standardwebhooks import Webhook

from kernel.settings import KafkaSettings
from merlin.local.load import joined
from merlin.local.service_processes import Service, Services, eventually
from tests.downstream import Downstream
from tests.integration.hooks import SECRET, all_delivered, first_successes, newest_is_readable, write_messages
from tests.integration.test_store_refusals import dead_letters
from webhooks.secret_box import new_key

NEW_SECRET = "whsec_" + "Q" * 32
FAST_RETRY = {"base": 0.05, "cap": 0.5, "max_attempts": 1000, "max_elapsed": 120.0}
ROOMS = [f"room-{n}" for n in range(12)]  # over every partition of the test topics


@contextlib.asynccontextmanager
async def admin_client(services: Services, **env: str) -> AsyncIterator[httpx.AsyncClient]:
    service = await services.admin_api(**env)
    headers = {"Authorization": f"Bearer {services.admin_token}"}
    async with httpx.AsyncClient(base_url=service.url or "", headers=headers, timeout=60) as client:
        yield client


def logged(service: Service, event: str, endpoint: str = "hook") -> list[float]:
    """When ``service`` logged ``event`` for ``endpoint`` (Unix times)."""
    return [entry["at"] for entry in service.logged(event) if entry.get("endpoint") == endpoint]


async def applied_everywhere(forwarders: list[Service], event: str, since: float, count: int = 1) -> float:
    """Seconds from ``since`` until every forwarder logged ``event`` ``count`` times."""

    async def all_of_them() -> float | None:
        seen = [logged(forwarder, event) for forwarder in forwarders]
        if all(len(times) >= count for times in seen):
            return max(times[count - 1] for times in seen) - since
        return None

    return await eventually(all_of_them, 15, f"{event} on every forwarder")


async def started_forwarders(services: Services, count: int) -> list[Service]:
    forwarders = [services.forwarder() for _ in range(count)]
    for forwarder in forwarders:
        await eventually(joined(forwarder), 30, "the forwarder owning partitions")
    return forwarders


async def test_an_endpoint_defined_changed_and_deleted_at_runtime_reaches_every_forwarder(
    sqlite_services: Services, downstream: tuple[Downstream, str]
) -> None:
    server, url = downstream
    write, read = await sqlite_services.write_api(), await sqlite_services.read_api()
    forwarders = await started_forwarders(sqlite_services, 2)
    async with admin_client(sqlite_services) as admin:
        defined = await admin.put(
            "/v1/admin/endpoints/hook",
            json={"url": f"{url}/hooks/hook", "secret": SECRET, "retry": FAST_RETRY},
        )
        defined_at = time.time()
        assert defined.status_code == 201, defined.text
        assert defined.json()["version"] == 1
        assert SECRET not in defined.text
        took = await applied_everywhere(forwarders, "endpoint_starting", defined_at)
        await asyncio.sleep(1)  # the scenario: events posted a second after the definition
        first = await write_messages(write, ROOMS, 4)
        await all_delivered(url, first)

        moved = await admin.put(
            "/v1/admin/endpoints/hook", json={"url": f"{url}/hooks/moved", "retry": FAST_RETRY}
        )
        assert moved.status_code == 200, moved.text
        assert (moved.json()["version"], moved.json()["url"]) == (2, f"{url}/hooks/moved")
        await applied_everywhere(forwarders, "endpoint_reconfigured", time.time())
        second = await write_messages(write, ROOMS, 4)

        async def at_the_new_receiver() -> list[dict[str, Any]] | None:
            records = list(server.received["moved"])
            ids = {record["body"]["event_id"] for record in records}
            return records if ids >= {i for ids in second.values() for i in ids} else None

        records = await eventually(at_the_new_receiver, 60, "the second events at the new URL")
        assert first_successes(records) == second  # none lost, order per room kept
        old = {record["body"]["event_id"] for record in server.received["hook"]}
        assert not old & {i for ids in second.values() for i in ids}

        deleted = await admin.delete("/v1/admin/endpoints/hook")
        assert deleted.status_code == 204
        await applied_everywhere(forwarders, "endpoint_flow_stopped", time.time())
        calls = len(server.received["hook"]) + len(server.received["moved"])
        third = await write_messages(write, ROOMS[:2], 3)
        async with httpx.AsyncClient(timeout=30, headers=write.headers) as client:
            await newest_is_readable(client, write, read, ROOMS[1], 4 + 4 + 3)
        assert len(server.received["hook"]) + len(server.received["moved"]) == calls, third
        assert (await admin.get("/v1/admin/endpoints/hook")).status_code == 404
    print(f"\nlive endpoints: PUT → started on both forwarders within {took:.3f} s")


async def test_a_secret_rotated_under_traffic_verifies_with_the_old_or_the_new_then_the_new_alone(
    sqlite_services: Services, downstream: tuple[Downstream, str]
) -> None:
    _, url = downstream
    write = await sqlite_services.write_api()
    forwarders = await started_forwarders(sqlite_services, 2)
    grace = 3.0
    async with admin_client(sqlite_services) as admin:
        body = {"url": f"{url}/hooks/hook", "secret": SECRET, "retry": FAST_RETRY}
        assert (await admin.put("/v1/admin/endpoints/hook", json=body)).status_code == 201
        await applied_everywhere(forwarders, "endpoint_starting", time.time())
        stop = asyncio.Event()

        async def keep_writing() -> dict[str, list[str]]:
            sent: dict[str, list[str]] = {}
            while not stop.is_set():
                for room, ids in (await write_messages(write, ROOMS[:3], 1)).items():
                    sent.setdefault(room, []).extend(ids)
                await asyncio.sleep(0.05)
            return sent

        writing = asyncio.create_task(keep_writing())
        await asyncio.sleep(1)
        rotated = await admin.put(
            "/v1/admin/endpoints/hook", json={**body, "secret": NEW_SECRET, "secret_grace_seconds": grace}
        )
        rotated_at = time.time()
        assert rotated.status_code == 200, rotated.text
        assert [old["fingerprint"] for old in rotated.json()["old_secrets"]] != []
        await asyncio.sleep(grace + 2)
        stop.set()
        sent = await writing
    records = await all_delivered(url, sent)
    old, new = Webhook(SECRET), Webhook(NEW_SECRET)

    def verifies(webhook: Webhook, record: dict[str, Any]) -> bool:
        headers = {
            k.replace("_", "-"): record[k] for k in ("webhook_id", "webhook_timestamp", "webhook_signature")
        }
        try:
            webhook.verify(orjson.dumps(record["body"]), headers)
        except Exception:  # any verification failure means "not verified"
            return False
        return True

    both = 0
    for record in records:
        with_old, with_new = verifies(old, record), verifies(new, record)
        assert with_old or with_new, record["webhook_id"]
        if record["at"] > rotated_at + grace + 0.5:
            assert with_new
            assert not with_old, "the old secret signs past its grace period"
        both += with_old and with_new
    assert both > 0, "no call carried both signatures during the grace period"
    assert any(record["at"] > rotated_at + grace + 0.5 for record in records)


@pytest.mark.parametrize(
    ("networks", "url", "reason"),
    [
        # A list that holds every IPv4 address still keeps the metadata service out.
        ("0.0.0.0/0", "http://169.254.169.254/latest/meta-data", "a cloud metadata service"),
        ("127.0.0.0/8", "http://10.0.0.1/", "private, outside MERLIN_ENDPOINTS_ALLOW_NETWORKS (127.0.0.0/8)"),
        ("", "http://127.0.0.1:9/", "loopback"),
        ("", "http://[::ffff:127.0.0.1]/", "loopback"),
        ("", "http://localhost:8080/hooks", "resolves to"),
    ],
)
async def test_an_endpoint_on_an_inner_address_is_refused_with_its_reason(
    sqlite_services: Services, networks: str, url: str, reason: str
) -> None:
    async with admin_client(sqlite_services, MERLIN_ENDPOINTS_ALLOW_NETWORKS=networks) as admin:
        answer = await admin.put("/v1/admin/endpoints/inner", json={"url": url, "secret": SECRET})
        assert answer.status_code == 422, answer.text
        (error,) = answer.json()["errors"]
        assert error["field"] == "url"
        assert reason in error["reason"]
        assert (await admin.get("/v1/admin/endpoints/inner")).status_code == 404


async def test_a_redirect_is_not_followed_the_event_is_dead_lettered_with_the_answer(
    sqlite_services: Services, downstream: tuple[Downstream, str], tmp_path: Path
) -> None:
    server, url = downstream
    server.behaviours["hook"].mode, server.behaviours["hook"].location = "redirect", "http://169.254.169.254/"
    write = await sqlite_services.write_api()
    await started_forwarders(sqlite_services, 1)
    async with admin_client(sqlite_services) as admin:
        body = {"url": f"{url}/hooks/hook", "secret": SECRET, "retry": FAST_RETRY}
        assert (await admin.put("/v1/admin/endpoints/hook", json=body)).status_code == 201
    sent = await write_messages(write, ["r1"], 1)
    kafka: KafkaSettings = sqlite_services.kafka

    async def dead_lettered() -> list[dict[str, str]] | None:
        letters = await asyncio.to_thread(dead_letters, kafka)
        found = [h for h in letters if h.get("merlin.dlq.endpoint") == "hook"]
        return found or None

    (letter,) = await eventually(dead_lettered, 30, "the redirected event dead-lettered")
    assert "302" in letter["merlin.dlq.reason"]
    assert [record["body"]["event_id"] for record in server.received["hook"]] == sent["r1"]


async def test_secrets_sealed_again_under_a_new_key_open_where_only_the_new_key_is_known(
    sqlite_services: Services, downstream: tuple[Downstream, str]
) -> None:
    _, url = downstream
    old_key, new = sqlite_services.endpoint_keys, new_key()
    async with admin_client(sqlite_services) as admin:
        body = {"url": f"{url}/hooks/hook", "secret": SECRET}
        assert (await admin.put("/v1/admin/endpoints/hook", json=body)).status_code == 201
    # A forwarder with the new key alone cannot open the secret: the definition is refused.
    refusing = sqlite_services.forwarder(MERLIN_ENDPOINTS_SECRET_KEYS=new)
    await eventually(lambda: _logged_async(refusing, "endpoint_definition_refused"), 30, "the refusal")
    async with admin_client(sqlite_services, MERLIN_ENDPOINTS_SECRET_KEYS=f"{new},{old_key}") as admin:
        answer = await admin.post("/v1/admin/secrets/reseal")
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"resealed": ["hook"]}
    opening = sqlite_services.forwarder(MERLIN_ENDPOINTS_SECRET_KEYS=new)
    await eventually(lambda: _logged_async(opening, "endpoint_starting"), 30, "the endpoint started")
    assert SECRET not in opening.output()


async def _logged_async(service: Service, event: str) -> bool | None:
    return bool(logged(service, event)) or None
