"""Live rooms across a read API process killed under load: its subscribers resume on another, miss nothing."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from merlin.local.service_processes import Service, Services, eventually
from tests.integration.test_live_rooms import Event, Stream, edit, order

ROOMS = [f"failover-{n}" for n in range(4)]
WRITES = 300  # creates and edits, over ROOMS
RATE = 60.0  # writes started per second, whatever the answers' pace (open loop)


@dataclass
class Subscriber:
    """A client of some rooms that, like EventSource, reconnects with the last id it received."""

    rooms: tuple[str, ...]
    received: list[Event] = field(default_factory=list)
    last_id: str | None = None
    connections: int = 0

    def url(self, read: Service) -> str:
        if len(self.rooms) == 1:
            return f"{read.url}/v1/rooms/{self.rooms[0]}/live"
        return f"{read.url}/v1/live?rooms={','.join(self.rooms)}"

    async def follow(self, client: httpx.AsyncClient, reads: list[Service], headers: dict[str, str]) -> None:
        """Streams from reads[0] while it lasts, then from reads[1], each time resuming after the last id;
        any other end (a refusal, an event other than a change) ends it with an AssertionError."""
        target = 0
        while True:
            resume = {} if self.last_id is None else {"Last-Event-ID": self.last_id}
            try:
                async with client.stream(
                    "GET", self.url(reads[target]), headers={**headers, **resume}
                ) as answer:
                    assert answer.status_code == 200, (await answer.aread()).decode()
                    self.connections += 1
                    live = Stream(answer)
                    while (event := await live.next(timeout=60)) is not None:
                        assert event.event in ("message.created", "message.updated"), event
                        self.received.append(event)
                        self.last_id = event.id
                    raise AssertionError(f"{self.rooms}: the stream ended without the process going away")
            except httpx.TransportError:
                pass  # the process went away: as a browser would, connect again (to the other one)
            target = 1

    def received_ids(self, room: str) -> list[str]:
        return [e.data["event_id"] for e in self.received if e.data["room_id"] == room]

    def changes(self, room: str) -> list[tuple[str, int]]:
        return [(e.data["message_id"], e.data["version"]) for e in self.received if e.data["room_id"] == room]


async def test_subscribers_of_a_read_api_killed_under_load_resume_on_another_and_miss_nothing(
    sqlite_services: Services,
) -> None:
    write = await sqlite_services.write_api()
    first = await sqlite_services.read_api()
    second = await sqlite_services.read_api()
    sqlite_services.forwarder()
    headers = sqlite_services.headers("failover")
    # 20 subscribers: three of each room alone, and eight of two to four rooms together.
    together = [c for size in (2, 3, 4) for c in itertools.combinations(ROOMS, size)]
    subscribers = [Subscriber((room,)) for room in ROOMS for _ in range(3)]
    subscribers += [Subscriber(rooms) for rooms in together[::2][:8]]
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(30, read=90), limits=limits) as streams,
        httpx.AsyncClient(timeout=60, limits=limits) as client,
    ):
        following = [asyncio.create_task(s.follow(streams, [first, second], headers)) for s in subscribers]
        try:
            # A stream open is registered with the feed just after its answer's head: until it has a
            # change of each of its rooms, a change may come before its registration. From its first
            # change of a room on, every later change of that room is due to it.
            await eventually(_all_connected(subscribers), 30, "every subscriber's stream open")
            written: list[tuple[str, dict[str, Any]]] = []
            for _ in range(3):
                written += [(room, await _create(client, write, room, "first", headers)) for room in ROOMS]
                with contextlib.suppress(AssertionError):
                    await eventually(_all_received(subscribers), 10, "a change of each room")
                    break
            else:
                raise AssertionError("a subscriber had no change of one of its rooms after three rounds")
            warm_up = {answer["event_id"] for _, answer in written}
            created: list[tuple[str, str, int]] = []  # room, message id, version it was created at
            started_then: list[int] = []  # how many writes had started when the first was killed

            async def one(n: int) -> None:
                room = ROOMS[n % len(ROOMS)]
                mine = [c for c in created if c[0] == room]
                if n % 3 and mine:
                    _, message_id, _ = mine[(n * 7) % len(mine)]
                    # Now and then an edit expecting version 1 of a message edited already: rejected.
                    expected = 1 if n % 11 == 0 else None
                    answer = {
                        **await edit(client, write, room, message_id, f"edit {n}", headers, expected),
                        "message_id": message_id,
                    }
                else:
                    answer = await _create(client, write, room, f"create {n}", headers)
                    created.append((room, answer["message_id"], 1))
                written.append((room, answer))

            async def kill_mid_load() -> None:
                await eventually(_all_received(subscribers, WRITES // 4), 60, "changes before the kill")
                started_then.append(len(pending))
                first.kill()  # SIGKILL: its streams end without a word

            killer = asyncio.create_task(kill_mid_load())
            pending: list[asyncio.Task[None]] = []
            loop = asyncio.get_running_loop()
            began = loop.time()
            for n in range(WRITES):
                await asyncio.sleep(max(0.0, began + n / RATE - loop.time()))
                pending.append(asyncio.create_task(one(n)))
            await asyncio.gather(*pending)
            await killer
            assert first.process.poll() is not None
            assert started_then[0] < WRITES * 3 // 4, f"killed after {started_then[0]} writes: not under load"
            # Each write's outcome, once the projection is past it (second's answer waits for that).
            due: dict[str, list[tuple[tuple[int, int], str, int]]] = {room: [] for room in ROOMS}
            rejected = 0
            for room, answer in written:
                outcome = (
                    await client.get(
                        f"{second.url}/v1/events/{answer['event_id']}",
                        params={"after_position": answer["position"]},
                        headers=headers,
                    )
                ).json()
                if outcome["status"] == "applied":
                    due[room].append((order(answer["position"]), answer["message_id"], outcome["version"]))
                else:
                    rejected += 1
            assert rejected > 0, "no edit was rejected: the comparison below would not show they are left out"
            expected = {room: [(m, v) for _, m, v in sorted(changes)] for room, changes in due.items()}
            last_of = {room: sorted(changes)[-1] for room, changes in due.items()}

            async def all_caught_up() -> bool | None:
                for task in following:
                    if task.done():
                        task.result()  # a subscriber that stopped says why (a refused stream, say)
                for s in subscribers:
                    for room in s.rooms:
                        _, message_id, version = last_of[room]
                        if (message_id, version) not in s.changes(room):
                            return None
                return True

            await eventually(all_caught_up, 30, "every subscriber at the last change of each of its rooms")
        finally:
            for task in following:
                task.cancel()
            await asyncio.gather(*following, return_exceptions=True)
    for s in subscribers:
        assert s.connections >= 2, f"{s.rooms} never reconnected"
        for room in s.rooms:
            got = s.changes(room)
            since = expected[room].index(got[0])  # its first change of the room: one of the warm-up's
            assert s.received_ids(room)[0] in warm_up
            assert got == expected[room][since:], f"{s.rooms}: {room} differs from the applied changes"


def _all_connected(subscribers: list[Subscriber]) -> Callable[[], Awaitable[bool | None]]:
    async def probe() -> bool | None:
        return all(s.connections for s in subscribers) or None

    return probe


def _all_received(subscribers: list[Subscriber], at_least: int = 0) -> Callable[[], Awaitable[bool | None]]:
    """A probe: each subscriber has a change of each of its rooms, and its share of ``at_least``."""

    async def probe() -> bool | None:
        for s in subscribers:
            if any(not s.changes(room) for room in s.rooms):
                return None
            if len(s.received) < at_least * len(s.rooms) // len(ROOMS):
                return None
        return True

    return probe


async def _create(
    client: httpx.AsyncClient, write: Service, room: str, body: str, headers: dict[str, str]
) -> dict[str, Any]:
    answer = await client.post(f"{write.url}/v1/rooms/{room}/messages", json={"body": body}, headers=headers)
    assert answer.status_code == 202, answer.text
    created: dict[str, Any] = {**answer.json(), "room_id": room}
    return created
