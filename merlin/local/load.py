"""Write load for fault tests and benchmarks: clients that retry as the README says, and a probe
that measures how long a write takes to become readable."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from merlin.local.service_processes import Service


@dataclass
class Write:
    key: str
    room: str
    sent_at: float
    statuses: list[int] = field(default_factory=list)
    acked_at: float | None = None
    message_id: str | None = None
    position: str | None = None


@dataclass
class Load:
    """Clients posting to ``rooms``, each retrying a 503 with the same key until it is acknowledged."""

    api: Service
    clients: int = 8
    rooms: list[str] = field(default_factory=lambda: [f"room-{n}" for n in range(12)])
    writes: list[Write] = field(default_factory=list)
    unexpected: list[tuple[int, str]] = field(default_factory=list)
    acks: list[float] = field(default_factory=list)

    async def run(self, stop: asyncio.Event, retry_until: float = 60.0) -> None:
        await asyncio.gather(*(self._client(n, stop, retry_until) for n in range(self.clients)))

    async def _client(self, n: int, stop: asyncio.Event, retry_until: float) -> None:
        async with httpx.AsyncClient(
            base_url=self.api.url or "", headers=self.api.headers, timeout=60
        ) as http:
            count = 0
            while not stop.is_set():
                write = Write(f"c{n}-{count}", self.rooms[(n + count) % len(self.rooms)], time.monotonic())
                self.writes.append(write)
                count += 1
                while True:
                    answer = await http.post(
                        f"/v1/rooms/{write.room}/messages",
                        json={"body": f"{write.key}"},
                        headers={"Idempotency-Key": write.key},
                    )
                    write.statuses.append(answer.status_code)
                    if answer.status_code == 202:
                        body = answer.json()
                        write.acked_at = time.monotonic()
                        write.message_id, write.position = body["message_id"], body["position"]
                        self.acks.append(write.acked_at)
                        break
                    if answer.status_code != 503:
                        self.unexpected.append((answer.status_code, answer.text[:200]))
                        return
                    if time.monotonic() - write.sent_at > retry_until:
                        return
                    await asyncio.sleep(float(answer.headers.get("retry-after", "1")) / 4)

    def flowing(self, count: int) -> Callable[[], Awaitable[bool | None]]:
        """For ``eventually``: whether ``count`` writes have been acknowledged yet."""

        async def acknowledged() -> bool | None:
            return len(self.acks) >= count or None

        return acknowledged

    def longest_gap(self, start: float, end: float) -> float:
        """The longest time within [start, end] in which no write was acknowledged."""
        moments = [start, *sorted(a for a in self.acks if start <= a <= end), end]
        return max(b - a for a, b in itertools.pairwise(moments))


@dataclass
class ReadProbe:
    """Writes one message at a time and waits until the read API returns it: the stall to readable."""

    write: Service
    read: Service
    stalls: list[float] = field(default_factory=list)
    finished: list[float] = field(default_factory=list)  # when each probe read its write
    room: str = "probe"

    async def run(self, stop: asyncio.Event) -> None:
        async with httpx.AsyncClient(headers=self.write.headers, timeout=60) as http:
            while not stop.is_set():
                started = time.monotonic()
                key = uuid.uuid4().hex
                while True:
                    answer = await http.post(
                        f"{self.write.url}/v1/rooms/{self.room}/messages",
                        json={"body": "probe"},
                        headers={"Idempotency-Key": key},
                    )
                    if answer.status_code == 202 or stop.is_set():
                        break
                    if answer.status_code != 503:
                        raise RuntimeError(f"the probe's write answered {answer.status_code}: {answer.text}")
                    await asyncio.sleep(0.1)
                if answer.status_code != 202:
                    return
                body = answer.json()
                url = f"{self.read.url}/v1/rooms/{self.room}/messages/{body['message_id']}"
                while (await http.get(url, params={"after_position": body["position"]})).status_code != 200:
                    if time.monotonic() - started > 120:
                        raise RuntimeError("the probe's write not readable within 2 minutes")
                    await asyncio.sleep(0.05)
                self.finished.append(time.monotonic())
                self.stalls.append(self.finished[-1] - started)
                await asyncio.sleep(0.1)


def joined(worker: Service) -> Callable[[], Awaitable[bool | None]]:
    """For ``eventually``: whether the forwarder ``worker`` has been given partitions yet.

    Joining is not enough: under cooperative assignment a new member's first assignment is empty
    and its partitions come one rebalance later, once their owners have let them go.
    """

    async def assigned() -> bool | None:
        return any(entry["partitions"] for entry in worker.logged("partitions_assigned")) or None

    return assigned


def revoked(worker: Service, since: float, until: float | None = None) -> int:
    """How many partitions the forwarder ``worker`` let go between ``since`` and ``until`` (epoch s)."""
    return sum(
        len(entry["partitions"])
        for entry in worker.logged("partitions_revoked")
        if entry["at"] >= since and (until is None or entry["at"] < until)
    )
