"""Open-loop messages: ``python -m bench.live.sender SPEC``, a process of its own.

Message ``i`` leaves at ``start + i / rate`` however slowly the server answers (each POST is a task of
its own on kept-alive connections, merlin's webhook client), round-robin over the rooms, its body
starting with the time it left. vegeta cannot put that time in a body, which is why this is not
vegeta. To merlin, a POST of the message to the write API; to Centrifugo, a publication of the
message as merlin's stream would show it, through its HTTP API.

SPEC is a JSON file: ``kind``, ``url``, ``headers``, ``rooms``, ``rate`` (messages/s), ``seconds``,
``prime`` (one priming message per room, then stop). It prints one JSON line: what was accepted
in each room, what was refused, and when the first and last message left.
"""

from __future__ import annotations

import asyncio
import resource
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import uvloop

from bench.live.accounting import prime_body, stamp
from bench.pipeline import percentile
from webhooks.calls import CallFailed, HttpSend
from webhooks.url_safety import LOOPBACK

ACCEPTED = {"merlin": 202, "centrifugo": 200}


def message(room: str, seq: int, body: str) -> dict[str, Any]:
    """A message as merlin's live stream shows one, for Centrifugo to publish: the same bytes to carry."""
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return {"message_id": str(uuid.uuid4()), "room_id": room, "sender_id": "bench", "body": body,
            "version": 1, "seq": seq, "created_at": now, "updated_at": now,
            "event_id": str(uuid.uuid4()), "position": f"0-{seq}"}  # fmt: skip


class Sender:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.kind: str = spec["kind"]
        self.url: str = spec["url"]
        self.headers = {"Content-Type": "application/json", **spec["headers"]}
        self.send = HttpSend(allowed=LOOPBACK)
        self.seq: dict[str, int] = {}
        self.accepted: dict[str, int] = {}
        self.refused: dict[str, int] = {}
        self.latencies: list[float] = []
        self.first = self.last = 0.0

    def _request(self, room: str, prime: bool) -> tuple[str, bytes]:
        sent = time.time()
        body = prime_body(sent) if prime else stamp(sent)
        if self.kind == "merlin":
            return f"{self.url}/v1/rooms/{room}/messages", orjson.dumps({"body": body})
        # A room's priming message comes first, whichever process sends the load after it.
        seq = 0 if prime else self.seq.setdefault(room, 0) + 1
        self.seq[room] = seq
        return f"{self.url}/api/publish", orjson.dumps({"channel": room, "data": message(room, seq, body)})

    async def post(self, room: str, prime: bool = False) -> None:
        url, body = self._request(room, prime)
        started = time.perf_counter()
        self.first = self.first or time.time()
        self.last = time.time()
        try:
            answer = await self.send(url, body, self.headers, 30)
        except CallFailed as exc:
            why = str(exc)[:80]
            self.refused[why] = self.refused.get(why, 0) + 1
            return
        if answer.status == ACCEPTED[self.kind]:
            self.latencies.append(time.perf_counter() - started)
            self.accepted[room] = self.accepted.get(room, 0) + 1
        else:
            why = f"HTTP {answer.status}"
            self.refused[why] = self.refused.get(why, 0) + 1


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    sender = Sender(spec)
    rooms: list[str] = spec["rooms"]
    loop = asyncio.get_running_loop()
    late = 0.0
    if spec.get("prime"):
        await asyncio.gather(*(sender.post(room, prime=True) for room in rooms))
    else:
        rate, total = float(spec["rate"]), round(float(spec["rate"]) * float(spec["seconds"]))
        tasks = set()
        start = loop.time()
        for i in range(total):
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            late = max(late, -delay)
            task = asyncio.create_task(sender.post(rooms[i % len(rooms)]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    await sender.send.close()
    used = resource.getrusage(resource.RUSAGE_SELF)
    latencies = sender.latencies or [0.0]
    return {
        "accepted": sender.accepted, "refused": sender.refused, "first_sent": sender.first,
        "last_sent": sender.last, "late_s": late, "cpu_s": used.ru_utime + used.ru_stime,
        "post_p50_ms": percentile(latencies, 0.5) * 1000, "post_p99_ms": percentile(latencies, 0.99) * 1000,
    }  # fmt: skip


if __name__ == "__main__":
    result = uvloop.run(run(orjson.loads(Path(sys.argv[1]).read_bytes())))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
