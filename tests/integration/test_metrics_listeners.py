"""Every service's metrics listener, scraped as Prometheus would: no token; process and runtime metrics,
librdkafka's statistics, the lag per topic, and the age of what an endpoint that is down has not had."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from merlin.local.service_processes import Services, eventually, free_port
from tests.downstream import Downstream
from tests.integration.hooks import control, endpoints_file, write_messages

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

FAST_STATISTICS = {"MERLIN_KAFKA_STATISTICS_INTERVAL_MS": "200"}


async def scrape(port: int) -> Samples | None:
    """The samples of ``/metrics`` on ``port``, asked without a token; None while nothing answers."""
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            answer = await client.get(f"http://127.0.0.1:{port}/metrics")
    except httpx.TransportError:
        return None
    assert answer.status_code == 200, answer.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def named(samples: Samples, name: str, **labels: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples called ``name`` with ``labels`` among theirs."""
    return {
        found: value
        for (sample, found), value in samples.items()
        if sample == name and set(labels.items()) <= set(found)
    }


def has_runtime_metrics(samples: Samples) -> bool:
    names = {name for name, _ in samples}
    return {
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "python_gc_collections_total",
    } <= names


async def test_the_apis_listeners_answer_prometheus_without_a_token(sqlite_services: Services) -> None:
    ports = {"write": free_port(), "read": free_port(), "admin": free_port()}
    write = await sqlite_services.write_api(
        MERLIN_WRITE_API_METRICS_PORT=str(ports["write"]), **FAST_STATISTICS
    )
    await sqlite_services.read_api(MERLIN_READ_API_METRICS_PORT=str(ports["read"]))
    await sqlite_services.admin_api(MERLIN_ADMIN_API_METRICS_PORT=str(ports["admin"]), **FAST_STATISTICS)
    async with httpx.AsyncClient(timeout=10) as client:
        assert (await client.get(f"{write.url}/metrics")).status_code == 401  # the main port's wants a token
        await write_messages(write, ["room-1"], 3)
        for port in ports.values():
            ready = await client.get(f"http://127.0.0.1:{port}/readyz")
            assert ready.status_code == 200, ready.text
            assert (await client.get(f"http://127.0.0.1:{port}/healthz")).json() == {"status": "ok"}

    for service, port in ports.items():
        samples = await eventually(lambda port=port: scrape(port), 30, f"the {service} API's listener")  # type: ignore[misc]
        assert has_runtime_metrics(samples), service

    async def producer_statistics(port: int) -> Samples | None:
        samples = await scrape(port)
        assert samples is not None
        rtt = named(samples, "merlin_kafka_broker_rtt_seconds", client="producer", stat="avg")
        queued = named(samples, "merlin_kafka_producer_queue_messages", client="producer")
        return samples if rtt and queued and all(value > 0 for value in rtt.values()) else None

    await eventually(lambda: producer_statistics(ports["write"]), 30, "the write API's producer statistics")
    await eventually(lambda: producer_statistics(ports["admin"]), 30, "the admin API's producer statistics")
    posted = named((await scrape(ports["write"])) or {}, "merlin_write_append_seconds_count")
    assert sum(posted.values()) == 3


async def test_the_forwarders_listener_shows_an_endpoint_that_is_down(
    sqlite_services: Services, downstream: tuple[Downstream, str], tmp_path: Path
) -> None:
    _, url = downstream
    await control(url, mode="fail", status=503, seconds=3600)
    port = free_port()
    write = await sqlite_services.write_api()
    sqlite_services.forwarder(
        **endpoints_file(tmp_path, url), MERLIN_FORWARDER_METRICS_PORT=str(port), **FAST_STATISTICS
    )
    await write_messages(write, ["room-1", "room-2"], 5)
    topic = sqlite_services.kafka.events_topic
    group = f"forwarder-{topic}"
    age = "merlin_endpoint_oldest_undelivered_age_seconds"

    async def stuck() -> Samples | None:
        samples = await scrape(port)
        if samples is None:
            return None
        waiting = named(samples, age, endpoint="hook")
        return samples if waiting and next(iter(waiting.values())) >= 2 else None

    samples = await eventually(stuck, 60, "the endpoint's oldest undelivered event two seconds old")
    assert has_runtime_metrics(samples)
    lag = named(samples, "merlin_forwarder_lag_records", topic=topic)
    assert {dict(labels)["group"] for labels in lag} == {group, f"{group}.endpoint.hook"}
    assert {dict(labels)["partition"] for labels in lag} == {"0", "1", "2"}
    first = next(iter(named(samples, age, endpoint="hook").values()))

    async def statistics() -> Samples | None:
        samples = await scrape(port)
        assert samples is not None
        clients = {
            dict(labels)["client"] for labels in named(samples, "merlin_kafka_consumer_fetch_queue_messages")
        }
        rtt = named(samples, "merlin_kafka_broker_rtt_seconds", client="producer")
        wanted = {"consumer:projection", "consumer:endpoint:hook"}
        return samples if wanted <= clients and rtt else None

    samples = await eventually(statistics, 30, "librdkafka's statistics of the forwarder's clients")
    later = next(iter(named(samples, age, endpoint="hook").values()))
    assert later > first, "the age grows while the endpoint is down"

    await control(url, mode="ok")

    async def delivered() -> bool | None:
        samples = await scrape(port)
        assert samples is not None
        return named(samples, age, endpoint="hook") == {(("endpoint", "hook"),): 0.0} or None

    await eventually(delivered, 60, "nothing left undelivered once the endpoint is back")
