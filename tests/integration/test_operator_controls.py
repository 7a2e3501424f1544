"""Operators' controls through the admin API, on the real broker, forwarder and a real downstream."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from merlin.local.service_processes import Service, Services, eventually
from tests.downstream import Downstream
from tests.integration.hooks import (
    SECRET,
    all_delivered,
    control,
    endpoints_file,
    first_successes,
    newest_is_readable,
    received,
    write_messages,
)
from tests.integration.test_store_refusals import dead_letters

FAST_RETRY = {"base": 0.05, "cap": 0.1, "max_attempts": 2, "max_elapsed": 10.0}


@contextlib.asynccontextmanager
async def admin_client(services: Services, env: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    """A running admin API (with ``env``) and a client of it that carries the token."""
    service = await services.admin_api(**env)
    headers = {"Authorization": f"Bearer {services.admin_token}"}
    async with httpx.AsyncClient(base_url=service.url or "", headers=headers, timeout=60) as client:
        yield client


async def post(client: httpx.AsyncClient, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    answer = await client.post(path, json=body)
    assert answer.status_code in (200, 202), answer.text
    document: dict[str, Any] = answer.json()
    return document


async def status(admin: httpx.AsyncClient) -> dict[str, Any]:
    answer = await admin.get("/v1/admin/endpoints/hook/status")
    assert answer.status_code == 200, answer.text
    document: dict[str, Any] = answer.json()
    return document


async def test_every_call_but_health_needs_the_admin_token_or_scope(
    sqlite_services: Services, tmp_path: Path
) -> None:
    service = await sqlite_services.admin_api()
    async with httpx.AsyncClient(base_url=service.url or "") as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200
        for path in ("/v1/admin/endpoints", "/metrics", "/openapi.json"):
            answer = await client.get(path)
            assert answer.status_code == 401, path
            assert answer.headers["www-authenticate"].startswith("Bearer")
            assert answer.headers["content-type"] == "application/problem+json"
        # The API explorer's page is a static shell, open; the document it loads is an operator's.
        assert (await client.get("/docs")).status_code == 200
        assert (await client.get("/openapi.json", headers=sqlite_services.headers("u1"))).status_code == 403
        wrong = await client.get("/v1/admin/endpoints", headers={"Authorization": "Bearer not-the-token"})
        assert wrong.status_code == 401
        right = await client.get(
            "/v1/admin/endpoints", headers={"Authorization": f"Bearer {sqlite_services.admin_token}"}
        )
        assert right.status_code == 200
        assert right.json() == {"items": []}
        user = await client.get("/v1/admin/endpoints", headers=sqlite_services.headers("u1"))
        assert user.status_code == 403  # a chat user's token: authenticated, not an operator
        operator = sqlite_services.headers("ops", scopes=("admin",))
        assert (await client.get("/v1/admin/endpoints", headers=operator)).status_code == 200
    assert sqlite_services.admin_token not in service.output()


async def test_the_command_line_speaks_to_the_admin_api(
    sqlite_services: Services, downstream: tuple[Downstream, str], tmp_path: Path
) -> None:
    _, url = downstream
    env = endpoints_file(tmp_path, url)
    service = await sqlite_services.admin_api(**env)
    cli = {**sqlite_services.env(**env), "MERLIN_ADMIN_URL": service.url or ""}

    def merlin(*arguments: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "merlin.cli", "endpoints", *arguments],
            env={**cli, **extra}, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    listed = await asyncio.to_thread(merlin, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [e["name"] for e in orjson.loads(listed.stdout)["items"]] == ["hook"]
    paused = await asyncio.to_thread(merlin, "pause", "hook")
    assert orjson.loads(paused.stdout)["paused"] is True
    shown = await asyncio.to_thread(merlin, "status", "hook")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("endpoint hook (group ")
    assert ": paused," in shown.stdout
    refused = await asyncio.to_thread(merlin, "status", "hook", MERLIN_ADMIN_TOKEN="x" * 20)
    assert refused.returncode == 2
    assert refused.stderr.strip() == "merlin: error: 401 A valid bearer token is required."
    unknown = await asyncio.to_thread(merlin, "pause", "nope")
    assert unknown.returncode == 2
    assert "no endpoint named 'nope'" in unknown.stderr

    # A file with hook's timeout changed and one more endpoint: the plan first, then carried out.
    changed = tmp_path / "changed"
    changed.mkdir()
    wanted = endpoints_file(changed, url, timeout=1.5, also={"other": {}})["MERLIN_ENDPOINTS_FILE"]
    planned = await asyncio.to_thread(merlin, "apply", "-f", wanted, "--dry-run")
    assert planned.returncode == 0, planned.stderr
    assert planned.stdout.splitlines() == ["+ other", "~ hook: timeout"]
    assert (await asyncio.to_thread(merlin, "show", "hook", "--json")).stdout.count('"timeout": 5.0') == 1
    applied = await asyncio.to_thread(merlin, "apply", "-f", wanted)
    assert applied.returncode == 0, applied.stderr
    assert "hook: version 2" in applied.stdout
    assert (await asyncio.to_thread(merlin, "apply", "-f", wanted, "--dry-run")).stdout.strip() == "no change"
    deleted = await asyncio.to_thread(merlin, "delete", "other")
    assert deleted.stdout.strip() == "other: deleted"
    listed = await asyncio.to_thread(merlin, "list", "--json")
    assert [e["name"] for e in orjson.loads(listed.stdout)["items"]] == ["hook"]


async def test_pause_stops_calls_within_a_second_survives_a_restart_and_resume_delivers_the_rest(
    sqlite_services: Services, downstream: tuple[Downstream, str], tmp_path: Path
) -> None:
    _, url = downstream
    env = endpoints_file(tmp_path, url)
    write = await sqlite_services.write_api()
    forwarder = sqlite_services.forwarder(**env)
    async with admin_client(sqlite_services, env) as admin:
        shown = (await admin.get("/v1/admin/endpoints/hook")).json()
        assert shown["paused"] is False
        assert shown["secret"]["fingerprint"].startswith("sha256:")
        assert SECRET not in str(shown)
        before = await write_messages(write, ["r1"], 3)
        await all_delivered(url, before)

        stop_writing = asyncio.Event()
        writing = asyncio.create_task(_keep_writing(write, "r1", stop_writing))
        await asyncio.sleep(0.5)  # deliveries under way when the pause comes
        assert (await post(admin, "/v1/admin/endpoints/hook/pause"))["paused"] is True
        paused_at = time.time()
        await asyncio.sleep(2.5)
        stop_writing.set()
        written = await writing
        late = [r for r in await received(url) if r["at"] > paused_at + 1.0]
        assert late == [], f"{len(late)} calls more than a second after the pause"

        forwarder.stop()
        forwarder = sqlite_services.forwarder(**env)
        await eventually(lambda: _lagging(admin), 30, "the paused endpoint's lag reported")
        calls = len(await received(url))
        await asyncio.sleep(2.0)  # long enough for a forwarder that forgot the pause to deliver
        assert len(await received(url)) == calls
        paused = await status(admin)
        assert paused["paused"] is True
        assert paused["oldest_undelivered_age_seconds"] > 0

        assert (await post(admin, "/v1/admin/endpoints/hook/resume"))["paused"] is False
        records = await all_delivered(url, {"r1": before["r1"] + written})
        assert first_successes(records)["r1"] == before["r1"] + written
        await eventually(lambda: _caught_up(admin), 30, "lag 0 after resuming")


async def _keep_writing(write: Service, room: str, stop: asyncio.Event) -> list[str]:
    """Post to ``room`` until ``stop``; a POST under way finishes, so every event written is counted."""
    sent: list[str] = []
    async with httpx.AsyncClient(headers=write.headers, timeout=30) as client:
        while not stop.is_set():
            answer = await client.post(
                f"{write.url}/v1/rooms/{room}/messages", json={"sender_id": "u1", "body": "more"}
            )
            assert answer.status_code == 202
            sent.append(answer.json()["event_id"])
            await asyncio.sleep(0.02)
    return sent


async def _lagging(admin: httpx.AsyncClient) -> bool | None:
    return (await status(admin))["lag"] > 0 or None


async def _caught_up(admin: httpx.AsyncClient) -> bool | None:
    return (await status(admin))["lag"] == 0 or None


async def test_rewind_to_a_time_delivers_exactly_the_events_from_then_again_with_the_same_keys(
    sqlite_services: Services, downstream: tuple[Downstream, str], tmp_path: Path
) -> None:
    _, url = downstream
    env = endpoints_file(tmp_path, url)
    write = await sqlite_services.write_api()
    sqlite_services.forwarder(**env)
    async with admin_client(sqlite_services, env) as admin:
        early = await write_messages(write, ["r1"], 5)
        await all_delivered(url, early)
        await asyncio.sleep(0.05)  # the broker stamps in milliseconds: a clear boundary
        boundary = datetime.now(UTC)
        await asyncio.sleep(0.05)
        late = await write_messages(write, ["r1"], 5)
        await all_delivered(url, late)

        answer = await post(admin, "/v1/admin/endpoints/hook/rewind", {"to": boundary.isoformat()})
        assert answer["paused"] is False

        async def again() -> list[dict[str, Any]] | None:
            records = await received(url)
            counts = Counter(r["body"]["event_id"] for r in records if r["answer"] == 200)
            return records if all(counts[e] == 2 for e in late["r1"]) else None

        records = await eventually(again, 60, "the events after the boundary delivered again")
        counts = Counter(r["body"]["event_id"] for r in records if r["answer"] == 200)
        assert all(counts[e] == 1 for e in early["r1"]), "an event before the boundary was sent again"
        assert all(r["idempotency_key"] == r["body"]["event_id"] for r in records)
        assert not (await admin.get("/v1/admin/endpoints/hook")).json()["paused"]

        bad = await admin.post("/v1/admin/endpoints/hook/rewind", json={"to": {"0": -1}})
        assert bad.status_code == 422
        before_kafka = await admin.post(
            "/v1/admin/endpoints/hook/rewind", json={"to": "0001-01-01T00:00:00Z"}
        )
        assert before_kafka.status_code == 422, before_kafka.text
        assert "1970-01-01T00:00:00Z" in before_kafka.text
        unknown = await admin.post("/v1/admin/endpoints/nope/rewind", json={"to": boundary.isoformat()})
        assert unknown.status_code == 404


async def test_a_blocked_room_holds_only_itself_until_unblock_skip_lets_it_go_on_in_order(
    sqlite_services: Services, downstream: tuple[Downstream, str], tmp_path: Path
) -> None:
    _, url = downstream
    env = endpoints_file(tmp_path, url, on_failure="block", retry=FAST_RETRY, buffer=10)
    await control(url, mode="refuse", match="poison", status=400)
    write, read = await sqlite_services.write_api(), await sqlite_services.read_api()
    sqlite_services.forwarder(**env)
    async with admin_client(sqlite_services, env) as admin:
        blocked_room, other = await _two_rooms_in_one_partition(write)
        async with httpx.AsyncClient(headers=sqlite_services.headers(), timeout=30) as client:
            poison = await client.post(
                f"{write.url}/v1/rooms/{blocked_room}/messages", json={"sender_id": "u1", "body": "poison"}
            )
            # Four buffers' worth: what memory does not hold stays in the log, to be read again.
            held = await write_messages(write, [blocked_room], 40)
            flowing = await write_messages(write, [other], 25)  # more than the buffer
            await all_delivered(url, flowing)  # the room beside it in the partition goes on
            await newest_is_readable(client, write, read, other, after_seq=26)
            later = await write_messages(write, [blocked_room], 5)
            held[blocked_room] += later[blocked_room]

        report = await eventually(lambda: _blocked(admin), 30, "the blocked room in the status")
        assert report["room_id"] == blocked_room
        assert report["event_id"] == poison.json()["event_id"]
        assert report["attempts"] == 1  # a 400 is not retried
        assert report["last_error"] == "refused with 400"
        sent = {r["body"]["event_id"] for r in await received(url)}
        assert not sent & set(held[blocked_room])

        missing = await admin.post(f"/v1/admin/endpoints/hook/rooms/{other}/unblock", json={"action": "skip"})
        assert missing.status_code == 404
        answer = await post(
            admin, f"/v1/admin/endpoints/hook/rooms/{blocked_room}/unblock", {"action": "skip"}
        )
        assert answer["event_id"] == poison.json()["event_id"]
        records = await all_delivered(url, held)
        assert first_successes(records)[blocked_room][1:] == held[blocked_room]  # after its "hello"
        twice = [
            e
            for e, n in Counter(r["body"]["event_id"] for r in records if r["answer"] == 200).items()
            if n > 1
        ]
        assert twice == []
        assert [r["answer"] for r in records if r["body"]["event_id"] == poison.json()["event_id"]] == [400]
        await eventually(lambda: _none_blocked(admin), 30, "no blocked room left")

    skipped = [
        h for h in dead_letters(sqlite_services.kafka) if h.get("event_id") == poison.json()["event_id"]
    ]
    assert [h["merlin.dlq.reason"] for h in skipped] == ["skipped by operator"]


async def _two_rooms_in_one_partition(write: Service) -> tuple[str, str]:
    """Two fresh rooms whose events share a partition (each got one message)."""
    seen: dict[int, str] = {}
    async with httpx.AsyncClient(headers=write.headers, timeout=30) as client:
        for n in range(100):
            room = f"room-{n}"
            answer = await client.post(
                f"{write.url}/v1/rooms/{room}/messages", json={"sender_id": "u1", "body": "hello"}
            )
            partition = int(answer.json()["position"].split("-")[0])
            if partition in seen:
                return seen[partition], room
            seen[partition] = room
    raise AssertionError("no two rooms in one partition")


async def _blocked(admin: httpx.AsyncClient) -> dict[str, Any] | None:
    rooms: list[dict[str, Any]] = (await status(admin))["blocked_rooms"]
    return rooms[0] if rooms else None


async def _none_blocked(admin: httpx.AsyncClient) -> bool | None:
    return not (await status(admin))["blocked_rooms"] or None


async def test_replay_delivers_a_dead_lettered_event_once_the_endpoint_works(
    sqlite_services: Services, downstream: tuple[Downstream, str], tmp_path: Path
) -> None:
    _, url = downstream
    env = endpoints_file(tmp_path, url, retry=FAST_RETRY)
    await control(url, mode="refuse", match="refuse me", status=400)
    write = await sqlite_services.write_api()
    sqlite_services.forwarder(**env)
    async with admin_client(sqlite_services, env) as admin:
        async with httpx.AsyncClient(headers=sqlite_services.headers(), timeout=30) as client:
            refused = await client.post(
                f"{write.url}/v1/rooms/r1/messages", json={"sender_id": "u1", "body": "refuse me"}
            )
        event_id = refused.json()["event_id"]
        await eventually(
            lambda: _dead_lettered(sqlite_services, event_id), 30, "the refused delivery dead-lettered"
        )
        await control(url, mode="ok")
        answer = await post(admin, "/v1/admin/dead-letters/replay", {"endpoint": "hook", "room_id": "r1"})
        assert answer["delivered"] == [event_id]
        assert answer["failed"] == []
        replayed = [r for r in await received(url) if r["body"]["event_id"] == event_id]
        assert [r["answer"] for r in replayed] == [400, 200]
        assert replayed[-1]["idempotency_key"] == event_id

        other_room = await post(admin, "/v1/admin/dead-letters/replay", {"endpoint": "hook", "room_id": "r2"})
        assert other_room["matched"] == 0


async def _dead_lettered(services: Services, event_id: str) -> bool | None:
    found = await asyncio.to_thread(dead_letters, services.kafka)
    return any(h.get("event_id") == event_id for h in found) or None


async def test_an_endpoint_failing_longer_than_it_allows_is_disabled_and_resumed_goes_on_where_it_stopped(
    sqlite_services: Services, downstream: tuple[Downstream, str], tmp_path: Path
) -> None:
    _, url = downstream
    await control(url, mode="fail", status=503)
    env = endpoints_file(tmp_path, url, on_failure="block", disable_after_seconds=2, retry=FAST_RETRY)
    write = await sqlite_services.write_api()
    forwarder = sqlite_services.forwarder(**env, MERLIN_FORWARDER_REPORT_EVERY="0.2")
    async with admin_client(sqlite_services, env) as admin:
        sent = await write_messages(write, ["r1", "r2", "r3"], 3)

        async def disabled() -> dict[str, Any] | None:
            answer = await status(admin)
            return answer if answer["disabled"] else None

        answer = await eventually(disabled, 30, "the failing endpoint disabled")
        assert answer["paused"] is True
        assert answer["disabled"]["reason"].startswith("no delivery succeeded for ")
        (entry,) = [e for e in forwarder.logged("endpoint_disabled") if e.get("endpoint") == "hook"]
        assert entry["reason"] == answer["disabled"]["reason"]
        calls = len(await received(url))
        await asyncio.sleep(1.0)  # a disabled endpoint is called no more
        assert len(await received(url)) == calls

        await control(url, mode="ok")
        assert (await post(admin, "/v1/admin/endpoints/hook/resume"))["paused"] is False
        records = await all_delivered(url, sent)
        assert first_successes(records) == sent  # the blocked heads first, in order per room
        assert (await status(admin))["disabled"] is None
