"""The forwarder's subscription to the settings topic, on a broker of its own: a subscription gone
half-dead while the process lives is renewed within its bound, and a forwarder started while the
broker is down reads the settings once it is back.

The broker has a second listener whose advertised address is a relay (``tests.stalling_proxy``),
so a client that bootstraps through the relay talks to the broker only through it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from kernel.settings import KafkaSettings
from kernel.topics import ensure_topics
from merlin.local import LocalKafka
from merlin.local.service_processes import Service, Services, eventually, free_port
from read_store.migrate import upgrade
from tests.downstream import Downstream
from tests.integration.hooks import SECRET, all_delivered, write_messages
from tests.integration.test_forwarder_health import get, samples
from tests.integration.test_live_endpoints import FAST_RETRY, ROOMS, admin_client
from tests.stalling_proxy import StallingProxy

# Below the ephemeral range: the broker, its controller, the listener behind the relay, the relay.
PORT = int(os.environ.get("TEST_PROXIED_KAFKA_PORT", "19292"))
RELAY = PORT + 3
EVERY, WITHIN = 0.5, 2.0


@pytest.fixture(scope="module")
def broker() -> Iterator[LocalKafka]:
    properties = {
        "listeners": f"PLAINTEXT://127.0.0.1:{PORT},CONTROLLER://127.0.0.1:{PORT + 1},"
        f"RELAYED://127.0.0.1:{PORT + 2}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{PORT},RELAYED://127.0.0.1:{RELAY}",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,RELAYED:PLAINTEXT",
    }
    kafka = LocalKafka(port=PORT, properties=properties)
    shutil.rmtree(kafka.state_dir, ignore_errors=True)
    kafka.start()
    try:
        yield kafka
    finally:
        kafka.stop()
        shutil.rmtree(kafka.state_dir, ignore_errors=True)


@pytest.fixture
async def services(broker: LocalKafka, tmp_path: Path) -> AsyncIterator[Services]:
    kafka = KafkaSettings().namespaced(
        f"subscription-{uuid.uuid4().hex[:8]}", bootstrap_servers=broker.bootstrap, partitions=3
    )
    await ensure_topics(kafka)
    url = f"sqlite:///{tmp_path / 'read.db'}"
    await upgrade(url)
    services = Services(kafka, url, tmp_path)
    services.settings.update(
        {
            "MERLIN_FORWARDER_SETTINGS_PING_EVERY": str(EVERY),
            "MERLIN_FORWARDER_SETTINGS_PING_WITHIN": str(WITHIN),
        }
    )
    yield services
    services.stop_all()


async def readiness(base: str) -> dict[str, Any] | None:
    answer = await get(f"{base}/readyz")
    return None if answer is None else dict(answer.json())


async def subscription_is(base: str, forwarder: Service, state: str, renewals: int = 0) -> dict[str, Any]:
    """``/readyz`` once it says the subscription is in ``state`` after at least ``renewals`` renewals."""

    async def there() -> dict[str, Any] | None:
        assert forwarder.process.poll() is None, forwarder.output()
        ready = await readiness(base)
        if ready is None:
            return None
        subscription = ready["subscription"]
        return ready if subscription["state"] == state and subscription["renewals"] >= renewals else None

    return await eventually(there, 60, f"the settings subscription {state} after {renewals} renewals")


async def test_a_subscription_gone_silent_is_renewed_within_its_bound_and_hears_what_changed_meanwhile(
    services: Services, downstream: tuple[Downstream, str]
) -> None:
    _, url = downstream
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with StallingProxy(RELAY, ("127.0.0.1", PORT + 2)) as relay:
        forwarder = services.forwarder(
            MERLIN_KAFKA_BOOTSTRAP_SERVERS=f"127.0.0.1:{RELAY}", MERLIN_FORWARDER_METRICS_PORT=str(port)
        )
        await subscription_is(base, forwarder, "ok")
        async with admin_client(services) as admin:
            assert relay.silence_established() > 0
            silenced_at = time.time()
            # A change while this forwarder hears nothing: it must have it once its reader is renewed.
            body = {"url": f"{url}/hooks/hook", "secret": SECRET, "retry": FAST_RETRY}
            assert (await admin.put("/v1/admin/endpoints/hook", json=body)).status_code == 201
            # Stalled is brief (from the renewal to the next ping read): the count says it was.
            await subscription_is(base, forwarder, "ok", renewals=1)
    renewed = [e["at"] for e in forwarder.logged("settings_subscription_renewed") if e["at"] > silenced_at]
    heard = [e["at"] for e in forwarder.logged("settings_subscription_ok") if e["at"] > renewed[0]]
    took = heard[0] - silenced_at
    # A ping unheard for WITHIN s renews the reader; pings go every EVERY s, and so do the checks.
    # Without the renewal, librdkafka hears again after its socket timeout: a minute.
    assert took < WITHIN + 2 * EVERY + 1.0, took

    async def started() -> bool | None:
        return any(e.get("endpoint") == "hook" for e in forwarder.logged("endpoint_starting")) or None

    await eventually(started, 10, "the endpoint defined during the silence started")
    metrics = await get(f"{base}/metrics")
    assert metrics is not None
    assert samples(metrics.text, "merlin_settings_subscription_renewals_total")[()] >= 1
    assert samples(metrics.text, "merlin_settings_subscription_up")[()] == 1
    print(f"\nsettings subscription: silent → renewed and hearing again in {took:.2f} s")


async def test_a_forwarder_started_while_the_broker_is_down_reads_the_settings_when_it_is_back(
    broker: LocalKafka, services: Services, downstream: tuple[Downstream, str]
) -> None:
    _, url = downstream
    async with admin_client(services) as admin:
        body = {"url": f"{url}/hooks/hook", "secret": SECRET, "retry": FAST_RETRY}
        assert (await admin.put("/v1/admin/endpoints/hook", json=body)).status_code == 201
    await asyncio.to_thread(broker.stop)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    forwarder = services.forwarder(MERLIN_FORWARDER_METRICS_PORT=str(port))

    async def waiting() -> dict[str, Any] | None:
        assert forwarder.process.poll() is None, forwarder.output()
        ready = await readiness(base)
        unread = forwarder.logged("settings_topic_unreadable")
        return ready if ready is not None and unread else None

    not_ready = await eventually(waiting, 60, "the forwarder waiting for the settings topic")
    assert not_ready["status"] == 503
    assert not_ready["checks"]["settings"] is False
    assert not_ready["subscription"]["state"] == "starting"

    await asyncio.to_thread(broker.start)
    await subscription_is(base, forwarder, "ok")
    write = await services.write_api()
    sent = await write_messages(write, ROOMS, 2)
    await all_delivered(url, sent)
    assert forwarder.process.poll() is None
