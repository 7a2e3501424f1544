"""Downstream delivery on the real broker, to a real HTTP server that misbehaves on request."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
from confluent_kafka import Consumer, Producer

from domain import MessageCreated, encode, headers
from kernel.auth import SCOPES
from kernel.position import Position
from merlin.local.service_processes import Service, Services, eventually, free_port
from read_store.engines import create_engine
from read_store.reader import ReadStore
from tests.downstream import Downstream
from tests.integration.hooks import (
    SECRET,
    all_delivered,
    control,
    endpoint_assignments,
    endpoints_file,
    first_successes,
    newest_is_readable,
    received,
    write_messages,
)


async def answered(url: str, answer: int | str) -> None:
    """Return once the downstream has given ``answer`` to a call."""

    async def given() -> bool | None:
        return any(r["answer"] == answer for r in await received(url)) or None

    await eventually(given, 60, f"a call answered {answer}")


async def test_a_downstream_failing_for_10_s_gets_everything_in_order_once_it_recovers(
    sqlite_services: Services, downstream: tuple[Downstream, str], tmp_path: Path
) -> None:
    _, url = downstream
    await control(url, mode="fail", status=503, secret=SECRET)
    write = await sqlite_services.write_api()
    sqlite_services.forwarder(**endpoints_file(tmp_path, url))
    sent = await write_messages(write, [f"room-{n}" for n in range(5)], 10)
    # The 10 s count from the first call refused, not from the test's start: on a busy machine the
    # services may take longer than that to reach the downstream at all.
    await answered(url, 503)
    await control(url, mode="fail", status=503, seconds=10, secret=SECRET)
    records = await all_delivered(url, sent, timeout=90)
    assert first_successes(records) == sent
    attempts: dict[str, set[str | None]] = defaultdict(set)
    for record in records:
        attempts[record["body"]["event_id"]].add(record["idempotency_key"])
    assert all(keys == {event_id} for event_id, keys in attempts.items())
    assert sum(1 for r in records if r["answer"] == 503) >= 5, "the outage was real"
    assert all(r["verified"] for r in records)


async def test_a_hanging_downstream_times_out_and_the_worker_stays_in_the_group(
    sqlite_services: Services, downstream: tuple[Downstream, str], tmp_path: Path
) -> None:
    _, url = downstream
    await control(url, mode="hang")
    write = await sqlite_services.write_api()
    forwarder = sqlite_services.forwarder(
        **endpoints_file(tmp_path, url, timeout=0.5), MERLIN_FORWARDER_MAX_POLL_INTERVAL_MS="3000"
    )
    sent = await write_messages(write, ["r1", "r2"], 5)
    await answered(url, "hang")  # the 6 s count from the first call left hanging
    await control(url, mode="hang", seconds=6)
    records = await all_delivered(url, sent, timeout=60)
    assert first_successes(records) == sent
    assert any(r["answer"] == "hang" for r in records)
    log = forwarder.output()
    assert endpoint_assignments(log) == 1, log
    assert "partitions_revoked" not in log
    assert "partitions_lost" not in log
    assert "crashed" not in log


async def test_a_permanent_400_is_dead_lettered_and_the_room_goes_on(
    sqlite_services: Services, downstream: tuple[Downstream, str], tmp_path: Path
) -> None:
    _, url = downstream
    await control(url, mode="refuse", match="refuse me", status=400)
    write = await sqlite_services.write_api()
    sqlite_services.forwarder(**endpoints_file(tmp_path, url))
    event_ids = []
    async with httpx.AsyncClient(headers=sqlite_services.headers(), timeout=30) as client:
        for body in ("first", "refuse me", "third"):
            response = await client.post(
                f"{write.url}/v1/rooms/r1/messages", json={"sender_id": "u1", "body": body}
            )
            event_ids.append(response.json()["event_id"])
    records = await all_delivered(url, {"r1": [event_ids[0], event_ids[2]]})
    assert first_successes(records) == {"r1": [event_ids[0], event_ids[2]]}
    refused = [r for r in records if r["body"]["event_id"] == event_ids[1]]
    assert [r["answer"] for r in refused] == [400]

    kafka = sqlite_services.kafka
    consumer = Consumer(kafka.client({"group.id": f"dlq-{uuid.uuid4()}", "auto.offset.reset": "earliest"}))
    consumer.subscribe([kafka.dead_letter_topic])

    async def dead_letter() -> dict[str, Any] | None:
        for message in await asyncio.to_thread(consumer.consume, 10, 0.5):
            if dict(message.headers() or []).get("merlin.dlq.stage") == b"delivery":
                document: dict[str, Any] = orjson.loads(message.value() or b"")
                return document
        return None

    document = await eventually(dead_letter, 30, "the failed delivery on the dead-letter topic")
    consumer.close()
    assert document["event"]["event_id"] == event_ids[1]
    assert document["endpoint"]["name"] == "hook"
    assert document["reason"] == "refused with 400"
    assert [a["status"] for a in document["attempts"]] == [400]


async def test_quiet_rooms_are_not_starved_by_a_hot_room(
    sqlite_services: Services, downstream: tuple[Downstream, str], tmp_path: Path
) -> None:
    _, url = downstream
    kafka = sqlite_services.kafka
    producer = Producer(kafka.client({"acks": "all", "enable.idempotence": True, "linger.ms": 20}))
    quiet: set[str] = set()
    hot: set[str] = set()

    def produce(room: str, n: int, into: set[str]) -> None:
        event = MessageCreated(uuid.uuid4(), room, uuid.uuid4(), "u1", f"{room} #{n}", datetime.now(UTC))
        into.add(str(event.event_id))
        producer.produce(kafka.events_topic, encode(event), key=room.encode(), headers=list(headers(event)))

    for n in range(10_000):
        produce("hot", n, hot)
        producer.poll(0)
    for n in range(10):
        for q in range(99):
            produce(f"quiet-{q}", n, quiet)
    assert producer.flush(60) == 0
    sqlite_services.forwarder(**endpoints_file(tmp_path, url, max_in_flight=32))

    async def finished(events: set[str]) -> float | None:
        records = await received(url)
        times = {r["body"]["event_id"]: r["at"] for r in records if r["answer"] == 200}
        return max(times[e] for e in events) if events <= times.keys() else None

    quiet_done = await eventually(lambda: finished(quiet), 120, "quiet rooms delivered")
    await eventually(lambda: finished(hot), 300, "hot room delivered")
    hot_by_then = sum(
        1
        for r in await received(url)
        if r["answer"] == 200 and r["body"]["event_id"] in hot and r["at"] <= quiet_done
    )
    # Served first come, first served, the quiet rooms behind the hot room's backlog would wait for all of
    # it; taking turns, they are all done while most of the hot room is still to come.
    assert hot_by_then < len(hot) / 2, hot_by_then


async def test_workers_joining_leaving_and_dying_lose_nothing_while_the_downstream_is_slow(
    postgres_services: Services, downstream: tuple[Downstream, str], tmp_path: Path
) -> None:
    services = postgres_services
    _, url = downstream
    await control(url, mode="slow", delay=0.01)
    env = endpoints_file(tmp_path, url, max_in_flight=16)
    write = await services.write_api()
    rooms = [f"room-{n}" for n in range(12)]
    sent: dict[str, list[str]] = defaultdict(list)
    last: dict[int, int] = {}
    stop = asyncio.Event()

    async def writer(room: str) -> None:
        async with httpx.AsyncClient(headers=postgres_services.headers(), timeout=30) as client:
            n = 0
            while not stop.is_set():
                response = await client.post(
                    f"{write.url}/v1/rooms/{room}/messages", json={"sender_id": "u1", "body": f"#{n}"}
                )
                assert response.status_code == 202, response.text
                sent[room].append(response.json()["event_id"])
                position = Position.parse(response.json()["position"])
                last[position.partition] = max(last.get(position.partition, -1), position.offset)
                n += 1
                await asyncio.sleep(0.02)

    async def delivered_count() -> int:
        return len({r["body"]["event_id"] for r in await received(url) if r["answer"] == 200})

    async def progress(what: str) -> None:
        before = await delivered_count()

        async def moved() -> bool | None:
            return True if await delivered_count() > before + 50 else None

        await eventually(moved, 60, what)

    async def assignments(service: Service, at_least: int) -> None:
        async def seen() -> bool | None:
            return True if endpoint_assignments(service.output()) >= at_least else None

        await eventually(seen, 60, f"{service.name} assigned {at_least} times")

    writers = [asyncio.create_task(writer(room)) for room in rooms]
    first = services.forwarder(**env)
    await progress("deliveries started")
    second = services.forwarder(**env)  # joins: a rebalance
    await assignments(second, 1)
    await assignments(first, 2)
    await progress("deliveries after the join")
    assert first.stop() == 0  # leaves cleanly: another rebalance
    await assignments(second, 2)
    await progress("deliveries after the leave")
    third = services.forwarder(**env)
    await assignments(third, 1)
    await assignments(second, 3)
    await progress("deliveries after the second join")
    second.process.send_signal(signal.SIGKILL)  # dies: its partitions move after the session timeout
    second.process.wait()
    await assignments(third, 2)
    await progress("deliveries after the death")
    stop.set()
    await asyncio.gather(*writers)

    records = await all_delivered(url, sent, timeout=120)
    order = first_successes(records)
    for room in rooms:
        assert order[room] == sent[room], room  # first deliveries in acknowledged order

    engine = create_engine(services.store_url, schema=services.store_schema)
    reads = ReadStore(engine, services.kafka.events_topic)
    for partition, offset in last.items():
        assert await reads.wait_for(Position(partition, offset), timeout=60)
    for room in rooms:
        page = await reads.page(room, None, None, 100_000)
        assert [m["seq"] for m in page] == list(range(1, len(sent[room]) + 1))
        assert all(m["version"] == 1 for m in page)
    await reads.close()
    assert third.stop() == 0


async def test_a_full_endpoint_buffer_pauses_its_partitions_until_it_drains(
    sqlite_services: Services, downstream: tuple[Downstream, str], tmp_path: Path
) -> None:
    _, url = downstream
    await control(url, mode="slow", delay=0.01)
    write = await sqlite_services.write_api()
    sent = await write_messages(write, ["r1", "r2", "r3"], 120)
    forwarder = sqlite_services.forwarder(
        **endpoints_file(tmp_path, url, buffer=20, max_in_flight=3),
        MERLIN_FORWARDER_MAX_POLL_INTERVAL_MS="2000",
        MERLIN_FORWARDER_BATCH_MAX="50",
    )
    records = await all_delivered(url, sent, timeout=120)
    assert first_successes(records) == sent
    log = forwarder.output()
    assert '"partitions_paused"' in log
    assert '"partitions_resumed"' in log
    assert endpoint_assignments(log) == 1, "it never left the group while paused"
    assert "partitions_revoked" not in log


async def test_a_worker_that_keeps_crashing_gives_up_with_a_non_zero_exit(sqlite_services: Services) -> None:
    forwarder = sqlite_services.forwarder(
        MERLIN_READ_STORE_URL=f"postgresql://merlin@127.0.0.1:{free_port()}/nowhere",
        MERLIN_FORWARDER_MAX_RESTARTS="2",
        MERLIN_FORWARDER_RESTART_MIN_BACKOFF="0.05",
    )
    assert await asyncio.to_thread(forwarder.process.wait, 60) == 1
    log = forwarder.output()
    assert log.count('"flow_crashed"') == 3
    assert '"forwarder_gave_up"' in log


async def test_an_endpoint_that_is_down_holds_back_only_itself(
    sqlite_services: Services, downstream: tuple[Downstream, str], tmp_path: Path
) -> None:
    """Its own flow and group: the chat's reads keep up while it fails, and it catches up afterwards."""
    _, url = downstream
    await control(url, mode="fail", status=503, seconds=3600)
    port = free_port()
    # The read API's own default bound (2 s), not the tests' longer one.
    write = await sqlite_services.write_api()
    read = await sqlite_services.read_api(MERLIN_READ_API_POSITION_WAIT_SECONDS="2")
    # A small buffer: the endpoint's flow pauses its own partitions early (it used to pause them all).
    sqlite_services.forwarder(
        **endpoints_file(tmp_path, url, buffer=50), MERLIN_FORWARDER_METRICS_PORT=str(port)
    )
    rooms = [f"room-{n}" for n in range(20)]
    sent = await write_messages(write, rooms, 50)
    async with httpx.AsyncClient(headers=sqlite_services.headers(), timeout=30) as client:
        for room in rooms:  # each room's newest write is readable within the read API's own bound
            sent[room].append(await newest_is_readable(client, write, read, room, after_seq=50))
        projection = (
            await client.get(f"{read.url}/v1/projection", headers=read.caller("ops", SCOPES))
        ).json()
        assert projection["lag"] == 0, projection
        metrics = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    endpoint_lag = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("merlin_forwarder_lag_records{") and '.endpoint.hook"' in line
    )
    assert endpoint_lag > 0, "the endpoint's backlog is in its group's lag"
    await control(url, mode="ok")
    records = await all_delivered(url, sent, timeout=120)
    assert first_successes(records) == sent


async def test_a_healthy_endpoint_beside_one_that_hangs_is_not_held_back(
    sqlite_services: Services, downstream: tuple[Downstream, str], tmp_path: Path
) -> None:
    """Each endpoint its own flow: nothing of the healthy one waits on the other's 30 s timeouts."""
    _, url = downstream
    async with httpx.AsyncClient(headers=sqlite_services.headers()) as client:
        spec = {"mode": "hang"}
        assert (await client.post(f"{url}/_control/stuck", json=spec)).status_code == 204
    env = endpoints_file(
        tmp_path, url, max_in_flight=8, also={"stuck": {"timeout": 30.0, "max_in_flight": 8}}
    )
    write = await sqlite_services.write_api()
    sqlite_services.forwarder(**env)
    sent = await write_messages(write, [f"room-{n}" for n in range(20)], 20)
    # Well inside the stuck endpoint's first timeout: waiting on any of its calls would miss this.
    records = await all_delivered(url, sent, timeout=25)
    assert first_successes(records) == sent
    async with httpx.AsyncClient(headers=sqlite_services.headers()) as client:
        stuck = (await client.get(f"{url}/_received/stuck")).json()
    assert len(stuck) == 8  # called meanwhile, up to its in-flight limit, and none answered
    assert {r["answer"] for r in stuck} == {"hang"}


async def test_a_new_endpoint_starts_from_when_it_was_first_run(
    sqlite_services: Services, downstream: tuple[Downstream, str], tmp_path: Path
) -> None:
    _, url = downstream
    write = await sqlite_services.write_api()
    history = await write_messages(write, ["r1", "r2"], 5)
    env = endpoints_file(tmp_path, url, since=None)
    forwarder = sqlite_services.forwarder(**env)

    async def started() -> bool | None:
        return True if '"endpoint_starts"' in forwarder.output() else None

    await eventually(started, 60, "the endpoint's group placed at its start")
    fresh = await write_messages(write, ["r1", "r2"], 5)
    records = await all_delivered(url, fresh, timeout=60)
    delivered = {r["body"]["event_id"] for r in records}
    assert not delivered & {event for events in history.values() for event in events}
    assert first_successes(records) == fresh
    # Restarted, it resumes from its group's offsets: nothing before is sent, nothing after is skipped.
    assert forwarder.stop() == 0
    later = await write_messages(write, ["r1"], 3)
    sqlite_services.forwarder(**env)
    records = await all_delivered(url, {**fresh, "r1": fresh["r1"] + later["r1"]}, timeout=60)
    assert not {r["body"]["event_id"] for r in records} & {e for events in history.values() for e in events}


def rss_mb(pid: int) -> float:
    """The resident memory of process ``pid``, in MB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


async def test_25_000_events_for_a_dead_endpoint_cost_the_worker_bounded_memory_and_the_reads_nothing(
    sqlite_services: Services, downstream: tuple[Downstream, str], tmp_path: Path
) -> None:
    _, url = downstream
    await control(url, mode="fail", status=503, seconds=3600)
    write = await sqlite_services.write_api()
    read = await sqlite_services.read_api(MERLIN_READ_API_POSITION_WAIT_SECONDS="2")
    forwarder = sqlite_services.forwarder(**endpoints_file(tmp_path, url))
    sent = await write_messages(write, ["warm-up"], 1)
    await eventually(lambda: _one_attempt(url), 60, "the endpoint called once")
    before = rss_mb(forwarder.process.pid)

    rooms = [f"room-{n}" for n in range(100)]
    events = [MessageCreated(uuid.uuid4(), rooms[n % 100], uuid.uuid4(), "u1", f"#{n}", datetime.now(UTC))
              for n in range(25_000)]  # fmt: skip
    producer = Producer(
        sqlite_services.kafka.client({"acks": "all", "enable.idempotence": True, "linger.ms": 5})
    )
    for event in events:
        producer.produce(sqlite_services.kafka.events_topic, key=event.room_id.encode(), value=encode(event),
                         headers=[(name, value) for name, value in headers(event)])  # fmt: skip
        producer.poll(0)
    assert producer.flush(30) == 0
    for event in events:
        sent[event.room_id].append(str(event.event_id))

    async with httpx.AsyncClient(headers=sqlite_services.headers(), timeout=30) as client:

        async def projected() -> bool | None:
            # The whole backlog, dumped at once, projected while the endpoint holds its share of it.
            operator = read.caller("ops", SCOPES)
            return (await client.get(f"{read.url}/v1/projection", headers=operator)).json()[
                "lag"
            ] == 0 or None

        await eventually(projected, 60, "the projection caught up with 25,000 records")
        for room in rooms:  # each room's newest write is readable within the read API's own bound
            sent[room].append(await newest_is_readable(client, write, read, room, after_seq=250))
    grown = rss_mb(forwarder.process.pid) - before
    assert grown < 150, f"the forwarder grew by {grown:.0f} MB holding a dead endpoint's backlog"

    await control(url, mode="ok")
    records = await all_delivered(url, sent, timeout=240)
    assert first_successes(records) == sent


async def _one_attempt(url: str) -> bool | None:
    return True if await received(url) else None
