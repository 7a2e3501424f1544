"""Every core used, on the real broker: `merlin forwarder --processes N` (members of the same groups
under a parent that restarts a crashed one and stops them all on SIGTERM) and the APIs' `--workers N`
(processes accepting on one socket, their metrics kept together)."""

from __future__ import annotations

import os
import signal
import socket
from typing import Any

import httpx

from merlin.local.service_processes import Services, eventually, free_port
from tests.integration.hooks import newest_is_readable, write_messages
from tests.integration.test_forwarder_health import get, samples


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_processes_share_the_partitions_a_crashed_one_is_restarted_and_sigterm_stops_them_all(
    sqlite_services: Services,
) -> None:
    ports = _two_free_ports()
    parent = sqlite_services.forwarder(
        MERLIN_FORWARDER_PROCESSES="2", MERLIN_FORWARDER_METRICS_PORT=str(ports[0])
    )
    write, read = await sqlite_services.write_api(), await sqlite_services.read_api()
    group = f"forwarder-{sqlite_services.kafka.events_topic}"

    async def owned(port: int) -> float | None:
        assert parent.process.poll() is None, parent.output()
        answer = await get(f"http://127.0.0.1:{port}/metrics")
        if answer is None:
            return None
        assigned = samples(answer.text, "merlin_forwarder_assigned_partitions").get((("group", group),), 0)
        return assigned or None

    async def split() -> list[float] | None:
        now = [await owned(port) or 0.0 for port in ports]
        return now if sum(now) == 3 and all(now) else None

    shares = await eventually(split, 60, "the 3 partitions split over both processes")
    assert sorted(shares) == [1, 2]
    started = parent.logged("process_started")
    assert len({entry["pid"] for entry in started}) == 2

    async with httpx.AsyncClient(headers=write.headers, timeout=30) as client:
        await write_messages(write, [f"room-{n}" for n in range(6)], 2)
        await newest_is_readable(client, write, read, "room-0", 2)

        crashed = started[0]["pid"]
        os.kill(crashed, signal.SIGKILL)

        async def restarted() -> list[dict[str, Any]] | None:
            again = [e for e in parent.logged("process_started") if e["process"] == started[0]["process"]]
            return again if len(again) == 2 else None

        again = await eventually(restarted, 30, "the killed process started again")
        assert again[1]["pid"] != crashed
        assert parent.logged("process_exited")
        await eventually(split, 60, "the partitions split over both processes again")
        await newest_is_readable(client, write, read, "room-1", 2)

    children = [entry["pid"] for entry in parent.logged("process_started")]
    assert parent.stop(timeout=30) == 0
    assert not [pid for pid in children if _alive(pid)]


def _two_free_ports() -> list[int]:
    """Two free ports in a row: process i of the group serves its metrics on the first + i."""
    while True:
        first = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", first + 1))
            except OSError:
                continue
        return [first, first + 1]


async def test_the_processes_end_with_their_parent_even_when_it_is_sigkilled(
    sqlite_services: Services,
) -> None:
    parent = sqlite_services.forwarder(MERLIN_FORWARDER_PROCESSES="2")

    async def started() -> list[int] | None:
        pids = [entry["pid"] for entry in parent.logged("process_started")]
        return pids if len(pids) == 2 else None

    children = await eventually(started, 30, "both processes started")
    parent.kill()

    async def gone() -> bool | None:
        return not [pid for pid in children if _alive(pid)] or None

    await eventually(gone, 20, "the children of a SIGKILLed parent gone")


async def test_api_workers_share_one_socket_and_metrics_and_one_killed_is_replaced(
    sqlite_services: Services,
) -> None:
    listener = free_port()
    api = await sqlite_services.write_api(
        MERLIN_WRITE_API_WORKERS="2", MERLIN_WRITE_API_METRICS_PORT=str(listener)
    )

    async def started() -> list[int] | None:
        pids = [entry["pid"] for entry in api.logged("process_started")]
        return pids if len(pids) == 2 else None

    workers = await eventually(started, 30, "both workers started")

    async def post_each_on_a_new_connection(count: int) -> None:
        for n in range(count):  # a new connection each time: the kernel picks the worker
            async with httpx.AsyncClient(headers=api.headers, timeout=30) as client:
                answer = await client.post(
                    f"{api.url}/v1/rooms/room-{n}/messages", json={"sender_id": "u1", "body": f"m{n}"}
                )
                assert answer.status_code == 202, answer.text

    await post_each_on_a_new_connection(40)
    os.kill(workers[0], signal.SIGKILL)
    await post_each_on_a_new_connection(40)  # the other worker answers meanwhile

    async def replaced() -> bool | None:
        return len(api.logged("process_started")) == 3 or None

    await eventually(replaced, 30, "the killed worker replaced")
    admin = sqlite_services.headers(scopes=("admin",))
    async with httpx.AsyncClient(headers=admin, timeout=30) as client:
        text = (await client.get(f"{api.url}/metrics")).text
    posted = sum(
        value
        for labels, value in samples(text, "merlin_http_requests_total").items()
        if ("method", "POST") in labels and ("status", "202") in labels
    )
    assert posted == 80  # every worker's count, the killed one's included
    # The parent's metrics listener answers for all of them, without a token, with each one's process_*.
    async with httpx.AsyncClient(timeout=30) as client:
        text = (await client.get(f"http://127.0.0.1:{listener}/metrics")).text
    posted = sum(
        value
        for labels, value in samples(text, "merlin_http_requests_total").items()
        if ("method", "POST") in labels and ("status", "202") in labels
    )
    assert posted == 80
    memory = samples(text, "process_resident_memory_bytes")
    assert {dict(labels)["worker"] for labels in memory} == {"parent", "write-api-0", "write-api-1"}
    children = [entry["pid"] for entry in api.logged("process_started")]
    assert api.stop(timeout=30) == 0
    assert not [pid for pid in children if _alive(pid)]
