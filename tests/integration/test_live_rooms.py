"""Live rooms on the real services: applied changes pushed as Server-Sent Events, resumable without a gap."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from kernel.auth import READ, WRITE, mint
from kernel.position import Position
from merlin.local.service_processes import Service, Services, eventually

PROBLEM = "application/problem+json"


@dataclass
class Event:
    id: str | None
    event: str
    data: dict[str, Any]


class Stream:
    """The events of one SSE response, parsed from its lines."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()

    async def next(self, timeout: float = 20.0) -> Event | None:
        """The next event (comments skipped); None when the stream ends."""
        fields: dict[str, str] = {}
        async with asyncio.timeout(timeout):
            async for line in self._lines:
                if not line:
                    if "data" in fields or "event" in fields:
                        return Event(
                            fields.get("id"), fields.get("event", "message"), orjson.loads(fields["data"])
                        )
                    continue
                if line.startswith(":"):
                    continue
                name, _, value = line.partition(":")
                fields[name] = value[1:] if value.startswith(" ") else value
        return None

    async def take(self, count: int, timeout: float = 30.0) -> list[Event]:
        events: list[Event] = []
        async with asyncio.timeout(timeout):
            while len(events) < count:
                event = await self.next(timeout)
                assert event is not None, f"the stream ended after {len(events)} of {count} events"
                events.append(event)
        return events


@asynccontextmanager
async def stream(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], params: dict[str, str] | None = None
) -> AsyncIterator[Stream]:
    async with client.stream("GET", url, headers=headers, params=params) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield Stream(response)


async def create(
    client: httpx.AsyncClient, write: Service, room: str, body: str, headers: dict[str, str]
) -> dict[str, Any]:
    answer = await client.post(f"{write.url}/v1/rooms/{room}/messages", json={"body": body}, headers=headers)
    assert answer.status_code == 202, answer.text
    created: dict[str, Any] = answer.json()
    return created


async def edit(
    client: httpx.AsyncClient, write: Service, room: str, message_id: str, body: str, headers: dict[str, str],
    expected_version: int | None = None,
) -> dict[str, Any]:  # fmt: skip
    json: dict[str, Any] = {"body": body}
    if expected_version is not None:
        json["expected_version"] = expected_version
    answer = await client.patch(
        f"{write.url}/v1/rooms/{room}/messages/{message_id}", json=json, headers=headers
    )
    assert answer.status_code == 202, answer.text
    edited: dict[str, Any] = answer.json()
    return edited


def order(position: str) -> tuple[int, int]:
    parsed = Position.parse(position)
    return parsed.partition, parsed.offset


async def test_a_subscriber_sees_each_applied_create_and_edit_of_its_rooms_in_order_as_the_read_api_shows_it(
    sqlite_services: Services,
) -> None:
    write = await sqlite_services.write_api()
    read = await sqlite_services.read_api()
    sqlite_services.forwarder()
    rooms = [f"live-{n}" for n in range(10)]
    headers = sqlite_services.headers("alice")
    async with (
        httpx.AsyncClient(timeout=60) as client,
        stream(client, f"{read.url}/v1/live", headers, {"rooms": ",".join(rooms)}) as live,
    ):
        written: list[tuple[str, str]] = []  # (event id, room)
        messages: dict[str, tuple[str, str]] = {}
        for n in range(100):
            room = rooms[n % 10]
            created = await create(client, write, room, f"hello {n}", headers)
            messages[created["message_id"]] = (room, created["event_id"])
            written.append((created["event_id"], room))
        rejected = []
        for n, (message_id, (room, _)) in enumerate(messages.items()):
            edited = await edit(client, write, room, message_id, f"edited {n}", headers, expected_version=1)
            written.append((edited["event_id"], room))
            if n % 25 == 0:  # version 2 now: an edit expecting 1 again is rejected
                refused = await edit(client, write, room, message_id, "never", headers, expected_version=1)
                rejected.append(refused["event_id"])
        events = await live.take(200, timeout=60)
        seen = [e.data["event_id"] for e in events]
        assert sorted(seen) == sorted(event_id for event_id, _ in written)
        assert not set(rejected) & set(seen)
        by_room: dict[str, list[tuple[int, int]]] = {}
        for e in events:
            by_room.setdefault(e.data["room_id"], []).append(order(e.data["position"]))
            assert e.event == ("message.created" if e.data["version"] == 1 else "message.updated")
        for room, positions in by_room.items():
            assert positions == sorted(positions), room
        # Each change is the message as the read API shows it, and its version the outcome's.
        last: dict[str, dict[str, Any]] = {}
        for e in events:
            outcome = (await client.get(f"{read.url}/v1/events/{e.data['event_id']}", headers=headers)).json()
            assert outcome["status"] == "applied"
            assert outcome["version"] == e.data["version"]
            assert outcome["position"] == e.data["position"]
            last[e.data["message_id"]] = e.data
        for message_id, data in last.items():
            shown = await client.get(
                f"{read.url}/v1/rooms/{data['room_id']}/messages/{message_id}", headers=headers
            )
            assert shown.json() == {k: v for k, v in data.items() if k not in ("event_id", "position")}
        # The created events' data were the messages as they were before the edits.
        for e in events:
            if e.event == "message.created":
                assert e.data["updated_at"] == e.data["created_at"]
                assert e.data["body"].startswith("hello ")


async def test_a_stream_resumed_with_its_last_event_id_gets_exactly_what_it_missed(
    sqlite_services: Services,
) -> None:
    write = await sqlite_services.write_api()
    read = await sqlite_services.read_api()
    sqlite_services.forwarder()
    headers = sqlite_services.headers("bob")
    url = f"{read.url}/v1/rooms/resumed/live"
    async with httpx.AsyncClient(timeout=60) as client:
        async with stream(client, url, headers) as live:
            first = [await create(client, write, "resumed", f"first {n}", headers) for n in range(5)]
            had = await live.take(5)
        assert [e.data["event_id"] for e in had] == [c["event_id"] for c in first]
        assert had[-1].id == had[-1].data["position"]
        # Disconnected: more is written, in this room and another.
        missed = [await create(client, write, "resumed", f"missed {n}", headers) for n in range(7)]
        await create(client, write, "elsewhere", "not this room", headers)
        async with stream(client, url, {**headers, "Last-Event-ID": had[-1].id or ""}) as live:
            again = await live.take(7)
            assert [e.data["event_id"] for e in again] == [c["event_id"] for c in missed]
            after = await create(client, write, "resumed", "after", headers)
            (next_one,) = await live.take(1)
            assert next_one.data["event_id"] == after["event_id"]
        # after_position resumes the same way.
        async with stream(client, url, headers, {"after_position": again[2].id or ""}) as live:
            tail = await live.take(5)
            assert [e.data["event_id"] for e in tail] == [
                *[c["event_id"] for c in missed[3:]],
                after["event_id"],
            ]


async def test_several_rooms_resume_each_from_the_last_position_of_its_partition(
    sqlite_services: Services,
) -> None:
    write = await sqlite_services.write_api()
    read = await sqlite_services.read_api()
    sqlite_services.forwarder()
    headers = sqlite_services.headers("carol")
    rooms = ["multi-a", "multi-b", "multi-c"]
    url, params = f"{read.url}/v1/live", {"rooms": ",".join(rooms)}
    async with httpx.AsyncClient(timeout=60) as client:
        async with stream(client, url, headers, params) as live:
            first = [await create(client, write, room, "one", headers) for room in rooms]
            had = await live.take(3)
        assert {e.data["event_id"] for e in had} == {c["event_id"] for c in first}
        cursor = had[-1].id or ""
        assert set(cursor.split(",")) >= {had[-1].data["position"]}
        missed = [await create(client, write, room, f"two {n}", headers) for n in range(3) for room in rooms]
        async with stream(client, url, {**headers, "Last-Event-ID": cursor}, params) as live:
            again = await live.take(len(missed))
            assert sorted(e.data["event_id"] for e in again) == sorted(c["event_id"] for c in missed)
            for room in rooms:
                mine = [e.data["event_id"] for e in again if e.data["room_id"] == room]
                assert mine == [c["event_id"] for c in missed if c["event_id"] in mine]
            marker = await create(client, write, rooms[0], "marker", headers)
            (next_one,) = await live.take(1)
            assert next_one.data["event_id"] == marker["event_id"]


async def test_streams_are_authorised_before_they_start(sqlite_services: Services) -> None:
    read = await sqlite_services.read_api()
    headers = sqlite_services.headers("dave", rooms=("mine",))
    async with httpx.AsyncClient(timeout=30) as client:
        answer = await client.get(f"{read.url}/v1/rooms/theirs/live", headers=headers)
        assert answer.status_code == 403
        assert answer.headers["content-type"] == PROBLEM
        answer = await client.get(f"{read.url}/v1/live", params={"rooms": "mine,theirs"}, headers=headers)
        assert answer.status_code == 403
        answer = await client.get(f"{read.url}/v1/rooms/mine/live")
        assert answer.status_code == 401
        assert answer.headers["content-type"] == PROBLEM
        writer_only = sqlite_services.headers("dave", rooms=("mine",), scopes=(WRITE,))
        answer = await client.get(f"{read.url}/v1/rooms/mine/live", headers=writer_only)
        assert answer.status_code == 403
        answer = await client.get(
            f"{read.url}/v1/rooms/mine/live", headers={**headers, "Last-Event-ID": "not-a-position"}
        )
        assert answer.status_code == 422


async def test_a_stream_ends_when_its_token_expires(sqlite_services: Services) -> None:
    read = await sqlite_services.read_api(MERLIN_AUTH_LEEWAY_SECONDS="0")
    token = mint(sqlite_services.auth_secret, "erin", scopes=(READ,), rooms=("brief",), ttl_seconds=3)
    started = time.monotonic()
    async with (
        httpx.AsyncClient(timeout=30) as client,
        stream(client, f"{read.url}/v1/rooms/brief/live", {"Authorization": f"Bearer {token}"}) as live,
    ):
        ended = await live.next(timeout=15)
        assert ended is not None
        assert ended.event == "expired"
        assert await live.next(timeout=5) is None
    assert time.monotonic() - started < 10


async def test_a_subscriber_that_never_reads_is_closed_once_its_buffer_fills_while_another_keeps_receiving(
    sqlite_services: Services,
) -> None:
    write = await sqlite_services.write_api()
    read = await sqlite_services.read_api(
        MERLIN_READ_API_LIVE_BUFFER="64", MERLIN_READ_API_LIVE_SEND_TIMEOUT_SECONDS="5"
    )
    sqlite_services.forwarder()
    headers = sqlite_services.headers("frank")
    # The slow one: a connection whose client reads nothing after its request.
    where = urlsplit(read.url or "")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (where.hostname, where.port))
    reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
    request = (
        f"GET /v1/rooms/crowded/live HTTP/1.1\r\nHost: {where.netloc}\r\n"
        f"Authorization: {headers['Authorization']}\r\nAccept: text/event-stream\r\n\r\n"
    )
    writer.write(request.encode())
    await writer.drain()
    body = "x" * 3000
    async with (
        httpx.AsyncClient(timeout=60) as client,
        stream(client, f"{read.url}/v1/rooms/crowded/live", headers) as fast,
    ):
        written = 0
        while not read.logged("live_subscriber_lagged"):
            # Past the socket's buffers (a few MB) the slow one's buffer fills within a batch or two.
            assert written < 6000, "the subscriber that reads nothing was never closed"
            batch = await asyncio.gather(
                *(create(client, write, "crowded", body, headers) for _ in range(50))
            )
            written += len(batch)
            # The other subscriber has each of them promptly, whatever the slow one does.
            got = await fast.take(len(batch), timeout=10)
            assert {e.data["event_id"] for e in got} == {c["event_id"] for c in batch}
        more = await create(client, write, "crowded", "still here", headers)
        (next_one,) = await fast.take(1, timeout=10)
        assert next_one.data["event_id"] == more["event_id"]
    # The slow one's stream ends, telling it to resume from its last id, however late it reads it.
    received = b""
    async with asyncio.timeout(30):
        while not received.endswith(b"\r\n0\r\n\r\n"):
            chunk = await reader.read(65536)
            if not chunk:
                break  # closed by the send timeout before it could be told
            received += chunk
    assert b"event: lagged" in received or not received.endswith(b"\r\n0\r\n\r\n")
    writer.close()


async def test_a_ticket_opens_one_stream_of_its_rooms_without_a_header(sqlite_services: Services) -> None:
    write = await sqlite_services.write_api()
    read = await sqlite_services.read_api()
    sqlite_services.forwarder()
    headers = sqlite_services.headers("gina", rooms=("ticketed", "other"))
    tickets = f"{read.url}/v1/live/tickets"
    async with httpx.AsyncClient(timeout=60) as client:
        refused = await client.post(
            f"{read.url}/v1/live/tickets", json={"rooms": ["theirs"]}, headers=headers
        )
        assert refused.status_code == 403
        answer = await client.post(
            f"{read.url}/v1/live/tickets", json={"rooms": ["ticketed"]}, headers=headers
        )
        assert answer.status_code == 200, answer.text
        ticket = answer.json()["ticket"]
        assert answer.json()["expires_in"] == 30
        other = await client.get(f"{read.url}/v1/rooms/other/live", params={"ticket": ticket})
        assert other.status_code == 403  # the ticket's rooms only (and it is used now)
        ticket = (await client.post(tickets, json={"rooms": ["ticketed"]}, headers=headers)).json()["ticket"]
        async with stream(client, f"{read.url}/v1/rooms/ticketed/live", {}, {"ticket": ticket}) as live:
            created = await create(client, write, "ticketed", "by ticket", headers)
            (got,) = await live.take(1)
            assert got.data["event_id"] == created["event_id"]
            again = await client.get(f"{read.url}/v1/rooms/ticketed/live", params={"ticket": ticket})
            assert again.status_code == 401
        elsewhere = await client.get(f"{read.url}/v1/rooms/ticketed/messages", params={"ticket": ticket})
        assert elsewhere.status_code == 401
    assert ticket not in read.output()


async def test_a_process_holds_at_most_its_streams_and_a_quiet_one_hears_heartbeats(
    sqlite_services: Services,
) -> None:
    read = await sqlite_services.read_api(
        MERLIN_READ_API_LIVE_MAX_STREAMS="1", MERLIN_READ_API_LIVE_HEARTBEAT_SECONDS="0.2"
    )
    headers = sqlite_services.headers("hal")
    async with httpx.AsyncClient(timeout=30) as client:
        async with client.stream("GET", f"{read.url}/v1/rooms/quiet/live", headers=headers) as first:
            assert first.status_code == 200
            second = await client.get(f"{read.url}/v1/rooms/loud/live", headers=headers)
            assert second.status_code == 503
            assert second.headers["content-type"] == PROBLEM
            assert second.json()["type"].endswith("/too-many-streams")
            assert second.headers["Retry-After"] == "1"
            async with asyncio.timeout(10):
                async for line in first.aiter_lines():
                    if line == ": heartbeat":
                        break

        async def open_again() -> bool | None:
            answer = await client.get(
                f"{read.url}/v1/rooms/loud/live", headers={**headers, "Last-Event-ID": "x"}
            )
            return answer.status_code == 422 or None  # past the bound's check: the stream's place is free

        await eventually(open_again, 10, "the closed stream's place given back")


async def test_on_postgresql_a_change_is_the_message_as_the_read_api_shows_it(
    postgres_services: Services,
) -> None:
    write = await postgres_services.write_api()
    read = await postgres_services.read_api()
    postgres_services.forwarder()
    headers = postgres_services.headers("ivy")
    async with httpx.AsyncClient(timeout=60) as client:
        async with stream(client, f"{read.url}/v1/rooms/pg/live", headers) as live:
            created = await create(client, write, "pg", "first", headers)
            (made,) = await live.take(1)
            url = f"{read.url}/v1/rooms/pg/messages/{created['message_id']}"
            shown = (await client.get(url, headers=headers)).json()
            assert {k: v for k, v in made.data.items() if k not in ("event_id", "position")} == shown
            edited = await edit(client, write, "pg", created["message_id"], "second", headers)
            (changed,) = await live.take(1)
            shown = (
                await client.get(url, params={"after_position": edited["position"]}, headers=headers)
            ).json()
            assert {k: v for k, v in changed.data.items() if k not in ("event_id", "position")} == shown
            assert changed.data["version"] == 2
        async with stream(
            client, f"{read.url}/v1/rooms/pg/live", {**headers, "Last-Event-ID": made.id or ""}
        ) as live:
            (again,) = await live.take(1)
            assert again.data == changed.data


async def test_a_resume_point_retention_deleted_is_answered_with_reload(sqlite_services: Services) -> None:
    write = await sqlite_services.write_api()
    read = await sqlite_services.read_api()
    sqlite_services.forwarder()
    headers = sqlite_services.headers("jim")
    url = f"{read.url}/v1/rooms/retained/live"
    async with httpx.AsyncClient(timeout=60) as client:
        async with stream(client, url, headers) as live:
            written = [await create(client, write, "retained", f"m {n}", headers) for n in range(3)]
            had = await live.take(3)
        # As retention would: the log no longer holds the first two records.
        last = Position.parse(written[-1]["position"])
        admin = AdminClient(sqlite_services.kafka.client())
        topic = sqlite_services.kafka.events_topic
        futures = admin.delete_records([TopicPartition(topic, last.partition, last.offset)])
        await asyncio.gather(*(asyncio.wrap_future(f) for f in futures.values()))
        async with stream(client, url, {**headers, "Last-Event-ID": had[0].id or ""}) as live:
            answer = await live.next()
            assert answer is not None
            assert answer.event == "reload"
            assert await live.next(timeout=10) is None
        # From the last one, nothing is missing: the stream goes on.
        async with stream(client, url, {**headers, "Last-Event-ID": had[-1].id or ""}) as live:
            more = await create(client, write, "retained", "more", headers)
            (got,) = await live.take(1)
            assert got.data["event_id"] == more["event_id"]
