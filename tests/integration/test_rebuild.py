"""Rebuilding the read store from the log, on the real broker and real stores.

The rebuilt stores hold what the live one holds, row for row, and no endpoint
hears of the rebuild; a rebuild stopped half-way continues where it was.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from confluent_kafka import Producer
from sqlalchemy import select

from domain import MessageCreated
from forwarder.consumer import log_bounds
from forwarder.rebuild import Plan, Progress, Target, rebuild
from forwarder.settings import ForwarderSettings
from kernel.position import Position
from kernel.settings import KafkaSettings
from merlin.local.service_processes import Service, Services, eventually
from read_store.dialect import NUL_REFUSED, as_utc
from read_store.engines import create_engine
from read_store.reader import ReadStore
from read_store.schema import event_outcomes, messages, positions, rooms
from tests.conftest import PostgresSchema
from tests.downstream import Downstream
from tests.integration.hooks import write_messages
from tests.integration.test_store_refusals import dead_letters, produce

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
ENDPOINTS = ("hook-a", "hook-b")
# What legitimately differs between two projections of one log: when each wrote a row.
WHEN_WRITTEN = {"event_outcomes": {"recorded_at"}, "positions": {"updated_at"}}


def two_endpoints(tmp_path: Path, url: str) -> dict[str, str]:
    """An endpoints file of ``ENDPOINTS``, each wanting the whole log; the env pointing a forwarder at it."""
    lines = []
    for name in ENDPOINTS:
        lines += [
            "[[endpoints]]", f'name = "{name}"', f'url = "{url}/hooks/{name}"', f'secret = "{SECRET}"',
            'since = "2000-01-01T00:00:00Z"',
            "[endpoints.retry]", "base = 0.05", "cap = 1.0",
        ]  # fmt: skip
    path = tmp_path / "endpoints.toml"
    path.write_text("\n".join(lines) + "\n")
    return {"MERLIN_ENDPOINTS_FILE": str(path)}


async def calls(url: str) -> dict[str, list[dict[str, Any]]]:
    """Every call each endpoint received, in arrival order."""
    async with httpx.AsyncClient() as client:
        return {name: (await client.get(f"{url}/_received/{name}")).json() for name in ENDPOINTS}


async def write_history(write: Service, rooms_count: int, per_room: int) -> None:
    """Messages over many rooms, and the edits and retries that give every kind of outcome."""

    await write_messages(write, [f"room-{n}" for n in range(rooms_count)], per_room)
    async with httpx.AsyncClient(headers=write.headers, timeout=30) as client:
        base = f"{write.url}/v1/rooms/edits/messages"

        async def post(body: str, **headers: str) -> dict[str, Any]:
            answer = await client.post(base, json={"sender_id": "u1", "body": body}, headers=headers)
            assert answer.status_code == 202, answer.text
            posted: dict[str, Any] = answer.json()
            return posted

        async def patch(message_id: str, sender: str, body: str, **headers: str) -> None:
            answer = await client.patch(
                f"{base}/{message_id}", json={"sender_id": sender, "body": body}, headers=headers
            )
            assert answer.status_code == 202, answer.text

        first = await post("first", **{"Idempotency-Key": "k1"})
        await post("first", **{"Idempotency-Key": "k1"})  # a retry: the same event again
        await post("other", **{"Idempotency-Key": "k1"})  # the same key, another body: conflict
        await patch(first["message_id"], "u1", "first, edited", **{"If-Match": '"1"'})
        await patch(first["message_id"], "u1", "stale", **{"If-Match": '"1"'})  # version_conflict
        await patch(first["message_id"], "u2", "not mine", **write.caller("u2"))  # forbidden


async def table_rows(url: str, schema: str | None) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the read store's tables, times in UTC, without the times rows were written."""
    engine = create_engine(url, schema=schema)
    dumped: dict[str, list[tuple[Any, ...]]] = {}
    try:
        async with engine.connect() as connection:
            for table in (messages, rooms, event_outcomes, positions):
                columns = [c for c in table.c if c.name not in WHEN_WRITTEN.get(table.name, set())]
                result = await connection.execute(select(*columns))
                dumped[table.name] = sorted(
                    tuple(as_utc(v) if isinstance(v, datetime) else v for v in row) for row in result
                )
    finally:
        await engine.dispose()
    return dumped


async def merlin(env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    """Run ``merlin`` as an operator would."""
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "merlin.cli", *arguments], env=env, capture_output=True,
        text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip


async def test_a_rebuild_into_postgresql_and_sqlite_is_the_live_store_again_and_calls_no_endpoint(
    sqlite_services: Services,
    postgres_schema: PostgresSchema,
    downstream: tuple[Downstream, str],
    tmp_path: Path,
) -> None:
    services, kafka, (_, hooks) = sqlite_services, sqlite_services.kafka, downstream
    write = await services.write_api()
    forwarder = services.forwarder(**two_endpoints(tmp_path, hooks))
    await write_history(write, rooms_count=40, per_room=8)
    # What only a hand-written record can be: a repeated create under another event id (duplicate),
    # a NUL the store refuses (written before the write API refused them), and a record that is no event.
    twin = MessageCreated(uuid.uuid4(), "hand", uuid.uuid4(), "u1", "twin", datetime.now(UTC))
    again = MessageCreated(uuid.uuid4(), "hand", twin.message_id, "u1", "twin", twin.occurred_at)
    refused = MessageCreated(uuid.uuid4(), "hand", uuid.uuid4(), "u1", "a\x00b", datetime.now(UTC))
    produce(kafka, [twin, again, refused])
    raw = Producer(kafka.client({"acks": "all", "enable.idempotence": True}))
    raw.produce(kafka.events_topic, b"not json", key=b"hand")
    assert raw.flush(10) == 0

    bounds = await asyncio.to_thread(log_bounds, kafka.client({"group.id": "probe"}), kafka.events_topic)
    total = sum(end for _, end in bounds.values())
    assert total == 40 * 8 + 6 + 4
    live = ReadStore(create_engine(services.store_url), kafka.events_topic)
    try:
        for partition, (_, end) in bounds.items():
            if end:
                assert await live.wait_for(Position(partition, end - 1), 60), f"partition {partition} behind"
        delivered_ids = await live.applied([str(e) for e in await all_event_ids(services.store_url)])
    finally:
        await live.close()
    assert len(delivered_ids) == 40 * 8 + 3  # the creates, "first" and its edit, the twin

    async def all_delivered() -> dict[str, list[dict[str, Any]]] | None:
        received = await calls(hooks)
        done = all(
            {r["webhook_id"] for r in received[name] if r["answer"] == 200} >= delivered_ids
            for name in ENDPOINTS
        )
        return received if done else None

    before = await eventually(all_delivered, 90, "every applied event delivered to both endpoints")
    letters_before = dead_letters(kafka)
    assert sorted(letter["merlin.dlq.stage"] for letter in letters_before) == ["decode", "store"]

    env = services.env()
    into_postgres = await merlin(
        env, "rebuild", "--to", postgres_schema.url, "--schema", postgres_schema.schema, "--json"
    )
    assert into_postgres.returncode == 0, into_postgres.stderr
    summary = orjson.loads(into_postgres.stdout)
    assert (summary["events"], summary["caught_up"], summary["refused"], summary["malformed"]) == (
        total, True, 1, 1,
    )  # fmt: skip
    assert summary["schema"] == postgres_schema.schema
    assert f"{total:,}/{total:,} events (100.0%)" in into_postgres.stderr
    assert f"MERLIN_READ_STORE_DB_SCHEMA={postgres_schema.schema}" in into_postgres.stderr

    sqlite_file = tmp_path / "rebuilt" / "read.db"
    into_sqlite = await merlin(env, "rebuild", "--to", f"sqlite:///{sqlite_file}")
    assert into_sqlite.returncode == 0, into_sqlite.stderr
    assert f"MERLIN_READ_STORE_URL=sqlite:///{sqlite_file}" in into_sqlite.stdout
    assert f"rebuild: {total:,} events in" in into_sqlite.stdout

    # The endpoints heard nothing of either rebuild: a message written now is the only call after them.
    after_rebuilds = await calls(hooks)
    assert {name: len(r) for name, r in after_rebuilds.items()} == {
        name: len(r) for name, r in before.items()
    }
    async with httpx.AsyncClient(headers=sqlite_services.headers(), timeout=30) as client:
        marker = await client.post(
            f"{write.url}/v1/rooms/marker/messages", json={"sender_id": "u1", "body": "after the rebuilds"}
        )
    marker_id = marker.json()["event_id"]

    async def marker_delivered() -> dict[str, list[dict[str, Any]]] | None:
        received = await calls(hooks)
        return (
            received if all(r[-1:] and r[-1]["webhook_id"] == marker_id for r in received.values()) else None
        )

    final = await eventually(marker_delivered, 60, "the marker delivered to both endpoints")
    for name in ENDPOINTS:
        assert final[name][len(before[name]) :] == final[name][-1:], f"{name} heard more than the marker"
        assert {r["webhook_id"] for r in final[name]} == delivered_ids | {marker_id}
    assert dead_letters(kafka) == letters_before
    # The rebuilds joined no group: the live projection's partitions never moved.
    log = forwarder.output()
    assert "partitions_revoked" not in log, log
    assert "partitions_lost" not in log, log

    live_rows = await table_rows(services.store_url, None)
    marker_rows = [row for row in live_rows["messages"] if row[0] == "marker"]
    live_rows["messages"] = [row for row in live_rows["messages"] if row[0] != "marker"]
    assert len(marker_rows) == 1
    rebuilt_postgres = await table_rows(postgres_schema.url, postgres_schema.schema)
    rebuilt_sqlite = await table_rows(f"sqlite:///{sqlite_file}", None)
    for rebuilt in (rebuilt_postgres, rebuilt_sqlite):
        # The live store has moved on by the marker since; everything else is the same, row for row.
        assert rebuilt["messages"] == live_rows["messages"]
        assert rebuilt["rooms"] == [row for row in live_rows["rooms"] if row[0] != "marker"]
        assert rebuilt["event_outcomes"] == [
            row for row in live_rows["event_outcomes"] if row[0] != marker_id
        ]
    ends = [(kafka.events_topic, partition, end - 1) for partition, (_, end) in bounds.items() if end]
    assert rebuilt_postgres["positions"] == rebuilt_sqlite["positions"] == sorted(ends)
    outcomes = Counter((row[4], row[5]) for row in rebuilt_postgres["event_outcomes"])
    assert outcomes == {
        ("applied", None): 40 * 8 + 2 + 1,
        ("applied", "duplicate"): 1,
        ("rejected", "conflict"): 1,
        ("rejected", "version_conflict"): 1,
        ("rejected", "forbidden"): 1,
        ("rejected", "store_refused"): 1,
    }
    assert NUL_REFUSED in {row[6] for row in rebuilt_sqlite["event_outcomes"]}


async def all_event_ids(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return list((await connection.execute(select(event_outcomes.c.event_id))).scalars())
    finally:
        await engine.dispose()


async def test_a_rebuild_stopped_half_way_continues_where_it_was_then_follows_the_log(
    kafka_settings: KafkaSettings, postgres_schema: PostgresSchema
) -> None:
    kafka = kafka_settings
    backlog = [
        MessageCreated(uuid.uuid4(), f"room-{n % 12}", uuid.uuid4(), "u1", f"#{n}", datetime.now(UTC))
        for n in range(600)
    ]
    produce(kafka, backlog)
    target = Target(postgres_schema.url, postgres_schema.schema)
    # Small batches: many transactions, so a stop lands with most of the log still to do.
    settings = ForwarderSettings(batch_max=20, poll_timeout=0.05)
    stop = asyncio.Event()

    def stop_after_the_first_batch(progress: Progress) -> None:
        if progress.done:
            stop.set()

    first = await rebuild(target, kafka, settings, stop=stop, report=stop_after_the_first_batch)
    assert not first.caught_up
    assert 0 < first.events < len(backlog) / 2, first.events

    plans: list[Plan] = []
    second = await rebuild(target, kafka, settings, planned=plans.append)
    assert second.caught_up
    assert sum(plans[0].starts.values()) == first.events
    assert (plans[0].total, second.events) == (len(backlog) - first.events, len(backlog) - first.events)

    # Following: once caught up, it goes on with what is written meanwhile, until stopped.
    stop = asyncio.Event()
    caught_up = asyncio.Event()
    following = asyncio.create_task(
        rebuild(target, kafka, settings, follow=True, stop=stop, caught_up=lambda _progress: caught_up.set())
    )
    await asyncio.wait_for(caught_up.wait(), 30)
    later = [
        MessageCreated(uuid.uuid4(), "room-0", uuid.uuid4(), "u1", f"later #{n}", datetime.now(UTC))
        for n in range(50)
    ]
    produce(kafka, later)
    reads = ReadStore(create_engine(target.url, schema=target.schema), kafka.events_topic)
    try:

        async def applied_all() -> bool | None:
            page = await reads.page("room-0", None, None, 1_000)
            return True if len(page) == 50 + len(backlog) // 12 else None

        await eventually(applied_all, 30, "the later events applied while following")
        stop.set()
        third = await asyncio.wait_for(following, 30)
        assert (third.caught_up, third.events) == (True, 50)
        for n in range(12):
            page = await reads.page(f"room-{n}", None, None, 1_000)
            expected = [e.body for e in [*backlog, *later] if e.room_id == f"room-{n}"]
            assert [m["body"] for m in page] == expected  # each once, in log order, across the three runs
            assert [m["seq"] for m in page] == list(range(1, len(expected) + 1))
    finally:
        await reads.close()


def test_errors_are_one_line_and_never_show_a_password(tmp_path: Path) -> None:
    env = {**os.environ, "MERLIN_READ_STORE_URL": f"sqlite:///{tmp_path / 'live.db'}"}

    def run(*arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "merlin.cli", "rebuild", *arguments], env=env, capture_output=True,
            text=True, timeout=60, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    unreachable = run("--to", "postgresql://merlin:s3cret@127.0.0.1:1/merlin")
    own = run("--to", env["MERLIN_READ_STORE_URL"])
    for answer in (unreachable, own):
        assert answer.returncode == 2
        assert answer.stderr.count("\n") == 1, answer.stderr
        assert answer.stderr.startswith("merlin: error: "), answer.stderr
        assert "s3cret" not in answer.stderr + answer.stdout
    assert "postgresql://merlin:***@127.0.0.1:1/merlin" in unreachable.stderr
    assert "services' own read store" in own.stderr
