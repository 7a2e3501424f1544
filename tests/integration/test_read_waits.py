"""Reads waiting for a position on the real services: bounded per caller, telling only of readable rooms."""

from __future__ import annotations

import asyncio
import time
import uuid
from functools import partial
from typing import Any

import httpx

from kernel.position import Position, partition_of
from merlin.local.service_processes import Service, Services, eventually

PROBLEM = "application/problem+json"


async def post(
    client: httpx.AsyncClient, write: Service, room: str, headers: dict[str, str]
) -> dict[str, Any]:
    answer = await client.post(
        f"{write.url}/v1/rooms/{room}/messages", json={"body": f"to {room}"}, headers=headers
    )
    assert answer.status_code == 202, answer.text
    created: dict[str, Any] = answer.json()
    return created


def room_on(partition: int, partitions: int, besides: tuple[str, ...] = ()) -> str:
    """A room whose events the write API puts on ``partition``."""
    rooms = (f"room-{n}" for n in range(1000))
    return next(room for room in rooms if partition_of(room, partitions) == partition and room not in besides)


async def test_one_caller_flooding_waits_leaves_every_other_caller_its_read_your_writes(
    sqlite_services: Services,
) -> None:
    write = await sqlite_services.write_api()
    read = await sqlite_services.read_api(
        MERLIN_READ_API_POSITION_WAIT_SECONDS="30",
        MERLIN_READ_API_MAX_POSITION_WAITERS="40",
        MERLIN_READ_API_MAX_POSITION_WAITERS_PER_CALLER="5",
    )
    mallory = sqlite_services.headers("mallory", rooms=("flood",))
    limits = httpx.Limits(max_connections=300, max_keepalive_connections=300)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        # No forwarder runs yet: nothing projects this position while mallory waits for it.
        pending = (await post(client, write, "flood", mallory))["position"]
        flooded: list[httpx.Response] = []

        async def flood_read() -> None:
            answer = await client.get(
                f"{read.url}/v1/rooms/flood/messages", params={"after_position": pending}, headers=mallory
            )
            flooded.append(answer)

        async def answered(count: int) -> bool | None:
            return len(flooded) >= count or None

        flood = [asyncio.create_task(flood_read()) for _ in range(60)]
        # At least the 20 past the process's bound are answered at once, however the bounds are kept.
        await eventually(partial(answered, 20), 30, "the flood's reads past a bound answered")
        others: list[tuple[str, dict[str, Any], asyncio.Task[httpx.Response]]] = []
        for wave in range(3):
            for n in range(11):
                subject = f"reader-{wave}-{n}"
                headers = sqlite_services.headers(subject, rooms=(subject,))
                created = await post(client, write, subject, headers)
                url = f"{read.url}/v1/rooms/{subject}/messages/{created['message_id']}"
                reading = client.get(url, params={"after_position": created["position"]}, headers=headers)
                others.append((subject, created, asyncio.create_task(reading)))
            flood.extend(asyncio.create_task(flood_read()) for _ in range(20))
            await eventually(partial(answered, 20 * (wave + 2)), 30, "mallory's further reads answered")
        sqlite_services.forwarder()
        for subject, created, task in others:
            answer = await task
            assert answer.status_code == 200, f"{subject}: {answer.text}"
            assert answer.json()["message_id"] == created["message_id"]
        await asyncio.gather(*flood)
    statuses = [answer.status_code for answer in flooded]
    assert statuses.count(200) == 5, statuses  # her own bound's worth waited, and read
    refused = [answer for answer in flooded if answer.status_code != 200]
    assert len(refused) == 115
    for answer in refused:
        assert (answer.status_code, answer.headers["retry-after"]) == (429, "1"), answer.text
        assert answer.headers["content-type"] == PROBLEM
        assert answer.json()["type"].endswith("/too-many-waiting-reads")


async def test_a_position_past_the_end_of_the_log_is_refused_at_once_and_fresh_writes_still_read(
    sqlite_services: Services,
) -> None:
    write = await sqlite_services.write_api()
    read = await sqlite_services.read_api(MERLIN_READ_API_POSITION_WAIT_SECONDS="30")
    sqlite_services.forwarder()
    partitions = sqlite_services.kafka.partitions
    alice = sqlite_services.headers("alice")
    async with httpx.AsyncClient(timeout=60) as client:
        created = await post(client, write, "lobby", alice)
        at = Position.parse(created["position"])
        for beyond in (at.offset + 1, at.offset + 1000, 10**18):
            started = time.monotonic()
            answer = await client.get(
                f"{read.url}/v1/rooms/lobby/messages",
                params={"after_position": f"{at.partition}-{beyond}"}, headers=alice,
            )  # fmt: skip
            took = time.monotonic() - started
            assert answer.status_code == 422, answer.text
            assert answer.json()["detail"] == "after_position: is beyond the end of the event log"
            assert took < 5, f"refused after {took:.1f} s: waited for a position no write had"
        # Every fresh write is past the ends the read API saw last, and is read back all the same.
        for n in range(30):
            room = f"room-{n % 6}"
            created = await post(client, write, room, alice)
            assert Position.parse(created["position"]).partition == partition_of(room, partitions)
            answer = await client.get(
                f"{read.url}/v1/rooms/{room}/messages/{created['message_id']}",
                params={"after_position": created["position"]}, headers=alice,
            )  # fmt: skip
            assert answer.status_code == 200, answer.text


async def test_a_position_on_another_rooms_partition_tells_a_caller_nothing(
    sqlite_services: Services,
) -> None:
    write = await sqlite_services.write_api()
    read = await sqlite_services.read_api(MERLIN_READ_API_POSITION_WAIT_SECONDS="30")
    sqlite_services.forwarder()
    partitions = sqlite_services.kafka.partitions
    mine = partition_of("lobby", partitions)
    other = (mine + 1) % partitions
    private = room_on(other, partitions)
    alice, eve = sqlite_services.headers("alice"), sqlite_services.headers("eve", rooms=("lobby",))
    async with httpx.AsyncClient(timeout=60) as client:
        for _ in range(5):
            secret = await post(client, write, private, alice)
        last = Position.parse(secret["position"])
        applied = await client.get(
            f"{read.url}/v1/events/{secret['event_id']}", params={"after_position": secret["position"]},
            headers=alice,
        )  # fmt: skip
        assert applied.json()["status"] == "applied"
        offsets = (0, last.offset, last.offset + 1, last.offset + 1000)  # written and applied; past the end
        for path in (
            "/v1/rooms/lobby/messages",
            f"/v1/events/{secret['event_id']}",
            f"/v1/events/{uuid.uuid4()}",
        ):
            answers = set()
            for offset in offsets:
                started = time.monotonic()
                answer = await client.get(
                    f"{read.url}{path}", params={"after_position": f"{other}-{offset}"}, headers=eve
                )
                took = time.monotonic() - started
                assert took < 5, f"{path} at offset {offset}: answered after {took:.1f} s"
                answers.add((answer.status_code, answer.text))
            assert len(answers) == 1, f"{path}: the answer depends on the other partition's log: {answers}"
            status, _ = answers.pop()
            assert status == 422
