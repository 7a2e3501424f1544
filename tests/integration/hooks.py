"""Helpers of the tests that deliver to a real downstream: its endpoints file, what it received, writes."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
import orjson

from merlin.local.service_processes import Service, eventually

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def endpoints_file(tmp_path: Path, url: str, **options: Any) -> dict[str, str]:
    """An endpoints file with one endpoint, ``hook`` (and those in ``also``, by name); the forwarder's env."""
    also: dict[str, dict[str, Any]] = options.pop("also", {})
    lines = [line for name, more in {"hook": options, **also}.items() for line in _endpoint(url, name, more)]
    path = tmp_path / "endpoints.toml"
    path.write_text("\n".join(lines) + "\n")
    return {"MERLIN_ENDPOINTS_FILE": str(path)}


def _endpoint(url: str, name: str, options: dict[str, Any]) -> list[str]:
    options = dict(options)
    retry = options.pop("retry", {"base": 0.05, "cap": 1.0, "max_attempts": 1000, "max_elapsed": 120.0})
    # These tests write before the forwarder starts: the endpoint takes the whole log.
    options.setdefault("since", "2000-01-01T00:00:00Z")
    if options["since"] is None:
        del options["since"]
    return [
        "[[endpoints]]",
        f'name = "{name}"',
        f'url = "{url}/hooks/{name}"',
        f'secret = "{SECRET}"',
        *(f"{key} = {orjson.dumps(value).decode()}" for key, value in options.items()),
        "[endpoints.retry]",
        *(f"{key} = {value}" for key, value in retry.items()),
    ]


def endpoint_assignments(log: str) -> int:
    """How often the forwarder whose ``log`` this is was assigned partitions in endpoint hook's group."""
    return sum(
        1 for line in log.splitlines() if '"partitions_assigned"' in line and '.endpoint.hook"' in line
    )


async def received(url: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient() as client:
        answer: list[dict[str, Any]] = (await client.get(f"{url}/_received/hook")).json()
        return answer


async def control(url: str, **spec: Any) -> None:
    async with httpx.AsyncClient() as client:
        assert (await client.post(f"{url}/_control/hook", json=spec)).status_code == 204


async def write_messages(api: Service, rooms: list[str], per_room: int) -> dict[str, list[str]]:
    """Post ``per_room`` messages to each room, rooms concurrently; event ids per room, acknowledged order."""
    sent: dict[str, list[str]] = defaultdict(list)

    async def room_writer(room: str) -> None:
        async with httpx.AsyncClient(headers=api.headers, timeout=30) as client:
            for n in range(per_room):
                response = await client.post(
                    f"{api.url}/v1/rooms/{room}/messages", json={"sender_id": "u1", "body": f"{room} #{n}"}
                )
                assert response.status_code == 202, response.text
                sent[room].append(response.json()["event_id"])

    await asyncio.gather(*(room_writer(room) for room in rooms))
    return sent


def first_successes(records: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Per room, event ids in the order of their first 2xx delivery."""
    seen: set[str] = set()
    order: dict[str, list[str]] = defaultdict(list)
    for record in records:
        event = record["body"]
        if record["answer"] == 200 and event["event_id"] not in seen:
            seen.add(event["event_id"])
            order[event["room_id"]].append(event["event_id"])
    return order


async def all_delivered(
    url: str, expected: dict[str, list[str]], timeout: float = 60
) -> list[dict[str, Any]]:
    wanted = {event_id for ids in expected.values() for event_id in ids}

    async def done() -> list[dict[str, Any]] | None:
        records = await received(url)
        delivered = {r["body"]["event_id"] for r in records if r["answer"] == 200}
        return records if wanted <= delivered else None

    return await eventually(done, timeout, "every event delivered")


async def newest_is_readable(
    client: httpx.AsyncClient, write: Service, read: Service, room: str, after_seq: int
) -> str:
    """Post one more message, "last", to ``room`` and read it back with its position; its event id.

    The read waits for the projection within the read API's bound: a 503 fails the test.
    """
    answer = await client.post(
        f"{write.url}/v1/rooms/{room}/messages", json={"sender_id": "u1", "body": "last"}
    )
    assert answer.status_code == 202, answer.text
    page = await client.get(
        f"{read.url}/v1/rooms/{room}/messages",
        params={"after_seq": after_seq, "after_position": answer.json()["position"]},
    )
    assert page.status_code == 200, page.text
    assert [m["body"] for m in page.json()["items"]] == ["last"]
    event_id: str = answer.json()["event_id"]
    return event_id
