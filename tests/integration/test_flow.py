"""The whole flow on the real broker: write API → events → forwarder → read store → read API."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import defaultdict
from typing import Any

import httpx
import orjson
from confluent_kafka import Consumer, Producer

from kernel.position import Position
from merlin.local.service_processes import Service, Services, eventually
from read_store.engines import create_engine
from read_store.reader import ReadStore

JSON = {"content-type": "application/json"}


async def post(
    client: httpx.AsyncClient, api: Service, room: str, body: dict[str, Any], **headers: str
) -> dict[str, Any]:
    response = await client.post(f"{api.url}/v1/rooms/{room}/messages", json=body, headers=headers)
    assert response.status_code == 202, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def patch(
    client: httpx.AsyncClient, api: Service, room: str, message_id: str, body: dict[str, Any], **headers: str
) -> dict[str, Any]:
    response = await client.patch(
        f"{api.url}/v1/rooms/{room}/messages/{message_id}", json=body, headers=headers
    )
    assert response.status_code == 202, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def test_a_posted_message_is_readable_after_its_position_and_edits_bump_its_version(
    sqlite_services: Services,
) -> None:
    write, read = await sqlite_services.write_api(), await sqlite_services.read_api()
    forwarder = sqlite_services.forwarder()
    async with httpx.AsyncClient(headers=sqlite_services.headers("alice"), timeout=30) as client:
        created = await post(client, write, "lobby", {"sender_id": "alice", "body": "hello"})
        url = f"{read.url}/v1/rooms/lobby/messages/{created['message_id']}"
        first = await client.get(url, params={"after_position": created["position"]})
        assert first.status_code == 200, first.text
        assert first.json()["body"] == "hello"
        assert (first.json()["version"], first.json()["seq"]) == (1, 1)

        edited = await patch(
            client, write, "lobby", created["message_id"], {"sender_id": "alice", "body": "hello, world"},
            **{"If-Match": '"1"'},
        )  # fmt: skip
        second = await client.get(url, params={"after_position": edited["position"]})
        assert (second.json()["body"], second.json()["version"]) == ("hello, world", 2)
        outcome = await client.get(f"{read.url}/v1/events/{edited['event_id']}")
        assert outcome.json()["status"] == "applied"
        assert outcome.json()["version"] == 2
    assert forwarder.stop() == 0, forwarder.output()
    assert "flow_stopped" in forwarder.output()


async def test_a_retried_post_with_the_same_idempotency_key_is_one_message(sqlite_services: Services) -> None:
    write, read = await sqlite_services.write_api(), await sqlite_services.read_api()
    sqlite_services.forwarder()
    async with httpx.AsyncClient(headers=sqlite_services.headers("bob"), timeout=30) as client:
        body = {"sender_id": "bob", "body": "once"}
        answers = [await post(client, write, "r1", body, **{"Idempotency-Key": "k-1"}) for _ in range(3)]
        assert len({a["message_id"] for a in answers}) == 1
        assert len({a["event_id"] for a in answers}) == 1
        clash = await post(
            client, write, "r1", {"sender_id": "bob", "body": "other"}, **{"Idempotency-Key": "k-1"}
        )
        assert clash["message_id"] == answers[0]["message_id"]
        page = await client.get(
            f"{read.url}/v1/rooms/r1/messages", params={"after_position": clash["position"]}
        )
        assert [m["body"] for m in page.json()["items"]] == ["once"]
        refused = await client.get(f"{read.url}/v1/events/{clash['event_id']}")
        assert refused.json()["status"] == "rejected"
        assert refused.json()["rejection"]["code"] == "conflict"


async def test_concurrent_writes_get_gap_free_seq_in_acknowledged_order(sqlite_services: Services) -> None:
    write, read = await sqlite_services.write_api(), await sqlite_services.read_api()
    sqlite_services.forwarder()
    rooms = [f"room-{n}" for n in range(20)]
    acknowledged: dict[str, list[tuple[Position, str]]] = defaultdict(list)

    async def client_sends(first: int, clients: int) -> None:
        # One connection per client: 20 clients writing at once, each to every room.
        async with httpx.AsyncClient(headers=sqlite_services.headers(f"u{first}"), timeout=60) as own:
            for n in range(first, 2000, clients):
                room = rooms[(n // clients) % len(rooms)]
                answer = await post(own, write, room, {"sender_id": f"u{first}", "body": f"message {n}"})
                acknowledged[room].append((Position.parse(answer["position"]), answer["message_id"]))

    await asyncio.gather(*(client_sends(first, 20) for first in range(20)))
    async with httpx.AsyncClient(headers=sqlite_services.headers(), timeout=60) as client:
        for room in rooms:
            sent = sorted(acknowledged[room])
            items: list[dict[str, Any]] = []
            # A room is read after its own last write: a position is the room's, not the log's.
            url: str | None = f"/v1/rooms/{room}/messages?limit=37&after_position={sent[-1][0]}"
            while url is not None:
                page = (await client.get(f"{read.url}{url}")).json()
                items.extend(page["items"])
                url = page["next"]
            assert [m["seq"] for m in items] == list(range(1, 101))
            assert [m["message_id"] for m in items] == [message_id for _, message_id in sent]


async def test_rejections_are_the_same_in_two_read_stores_fed_from_one_log(
    sqlite_services: Services, postgres_services: Services
) -> None:
    # Both fixtures made topics; feed both stores from the SQLite fixture's log.
    postgres_services.kafka = sqlite_services.kafka
    write = await sqlite_services.write_api()
    sqlite_services.forwarder(MERLIN_FORWARDER_GROUP_ID=f"sqlite-{uuid.uuid4()}")
    postgres_services.forwarder(MERLIN_FORWARDER_GROUP_ID=f"postgres-{uuid.uuid4()}")
    async with httpx.AsyncClient(headers=sqlite_services.headers("alice"), timeout=30) as client:
        created = await post(client, write, "r1", {"sender_id": "alice", "body": "v1"})
        mid = created["message_id"]
        events = [
            await patch(
                client, write, "r1", mid, {"sender_id": "alice", "body": "v2", "expected_version": 1}
            ),
            await patch(
                client, write, "r1", mid, {"sender_id": "alice", "body": "stale", "expected_version": 1}
            ),
            await patch(
                client,
                write,
                "r1",
                mid,
                {"sender_id": "mallory", "body": "mine"},
                **sqlite_services.headers("mallory"),
            ),
            await patch(client, write, "r1", str(uuid.uuid4()), {"sender_id": "alice", "body": "ghost"}),
            await patch(client, write, "r1", mid, {"sender_id": "alice", "body": "v3"}),
        ]
    last = Position.parse(events[-1]["position"])
    topic = sqlite_services.kafka.events_topic
    views = []
    for services in (sqlite_services, postgres_services):
        engine = create_engine(services.store_url, schema=services.store_schema)
        reads = ReadStore(engine, topic)
        assert await reads.wait_for(last, timeout=30)
        outcomes = []
        for event in [created, *events]:
            outcome = await reads.outcome(event["event_id"])
            assert outcome is not None
            outcome.pop("recorded_at")
            outcomes.append(outcome)
        views.append((outcomes, await reads.message("r1", mid)))
        await reads.close()
    assert views[0] == views[1]
    outcomes, message = views[0]
    assert [o["status"] for o in outcomes] == [
        "applied",
        "applied",
        "rejected",
        "rejected",
        "rejected",
        "applied",
    ]
    assert [o.get("rejection", {}).get("code") for o in outcomes[2:5]] == [
        "version_conflict",
        "forbidden",
        "not_found",
    ]
    assert message is not None
    assert (message["body"], message["version"]) == ("v3", 3)


async def test_sigkilled_forwarders_still_apply_every_event_exactly_once(postgres_services: Services) -> None:
    services = postgres_services
    write = await services.write_api()
    rooms = [f"room-{n}" for n in range(12)]
    created: dict[str, tuple[str, str]] = {}  # message_id -> (room, event_id)
    updates: dict[str, list[str]] = defaultdict(list)  # message_id -> update event ids
    last_offsets: dict[int, int] = {}
    engine = create_engine(services.store_url, schema=services.store_schema)
    reads = ReadStore(engine, services.kafka.events_topic)

    async def writer(client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        n = 0
        # Keep writing until the kills are over, so every kill lands while there is work.
        while not stop.is_set() and n < 50_000:
            room = rooms[n % len(rooms)]
            if n % 3 == 2 and created:
                mid = random.choice(list(created))
                owner_room = created[mid][0]
                answer = await patch(client, write, owner_room, mid, {"sender_id": "u1", "body": f"edit {n}"})
                updates[mid].append(answer["event_id"])
            else:
                answer = await post(client, write, room, {"sender_id": "u1", "body": f"m{n}"})
                created[answer["message_id"]] = (room, answer["event_id"])
            position = Position.parse(answer["position"])
            last_offsets[position.partition] = max(position.offset, last_offsets.get(position.partition, -1))
            n += 1

    async def applied_total() -> int:
        return sum(offset + 1 for offset in (await reads.positions()).values())

    kills = 0
    async with httpx.AsyncClient(headers=postgres_services.headers(), timeout=30) as client:
        stop = asyncio.Event()
        writing = asyncio.create_task(writer(client, stop))
        while kills < 12:
            forwarder = services.forwarder(MERLIN_FORWARDER_BATCH_MAX="25")
            before = await applied_total()

            async def progressed(before: int = before) -> bool | None:
                return True if await applied_total() > before else None

            await eventually(progressed, 60, "projection moving after a restart")
            await asyncio.sleep(random.uniform(0, 0.3))  # a random point while it consumes
            forwarder.kill()
            kills += 1
        stop.set()
        await writing
    final = services.forwarder()
    for partition, offset in last_offsets.items():
        assert await reads.wait_for(Position(partition, offset), timeout=60)

    total = 0
    for room in rooms:
        page = await reads.page(room, None, None, 10_000)
        assert [m["seq"] for m in page] == list(range(1, len(page) + 1))
        for message in page:
            edits = updates.get(message["message_id"], [])
            if message["version"] != 1 + len(edits):
                outcomes = [await reads.outcome(event_id) for event_id in edits]
                raise AssertionError(f"{message} after {outcomes}")
        total += len(page)
    assert total == len(created)
    for message_id, (room, event_id) in created.items():
        outcome = await reads.outcome(event_id)
        assert outcome is not None
        assert outcome["status"] == "applied", (room, message_id)
    assert final.stop() == 0
    await reads.close()


async def test_a_poison_record_is_dead_lettered_and_the_flow_goes_on(sqlite_services: Services) -> None:
    kafka = sqlite_services.kafka
    producer = Producer(kafka.client({"acks": "all", "enable.idempotence": True}))
    producer.produce(kafka.events_topic, key=b"r1", value=b"{not json", partition=0)
    producer.produce(
        kafka.events_topic, key=b"r1", partition=0,
        value=orjson.dumps({"schema_version": 99, "event_type": "MessageCreated"}),
    )  # fmt: skip
    assert producer.flush(10) == 0
    write, read = await sqlite_services.write_api(), await sqlite_services.read_api()
    sqlite_services.forwarder()
    async with httpx.AsyncClient(headers=sqlite_services.headers(), timeout=30) as client:
        after = await post(client, write, "r1", {"sender_id": "u1", "body": "still flowing"})
        page = await client.get(
            f"{read.url}/v1/rooms/r1/messages", params={"after_position": after["position"]}
        )
        assert [m["body"] for m in page.json()["items"]] == ["still flowing"]

    consumer = Consumer(kafka.client({"group.id": f"dlq-{uuid.uuid4()}", "auto.offset.reset": "earliest"}))
    consumer.subscribe([kafka.dead_letter_topic])
    dead: list[tuple[bytes | None, dict[str, Any]]] = []

    async def two_dead_letters() -> bool | None:
        for message in await asyncio.to_thread(consumer.consume, 10, 0.5):
            assert message.error() is None
            dead.append((message.value(), dict(message.headers() or [])))
        return True if len(dead) >= 2 else None

    await eventually(two_dead_letters, 30, "two records on the dead-letter topic")
    consumer.close()
    assert dead[0][0] == b"{not json"
    assert dead[0][1]["merlin.dlq.reason"].startswith(b"not JSON")
    assert dead[0][1]["merlin.dlq.offset"] == b"0"
    assert b"unknown schema_version 99" in dead[1][1]["merlin.dlq.reason"]


async def _killed_and_restarted(services: Services, static: dict[str, str], asks_first: bool = False) -> None:
    """A forwarder under ``static`` settings SIGKILLed once it projected, and another started; the
    write after the kill must be readable within the read API's 15 s wait. With ``asks_first``, the
    other starts while the first still lives, and must be refused the id before the first is killed."""
    write, read = await services.write_api(), await services.read_api()
    first = services.forwarder(**static)
    async with httpx.AsyncClient(headers=services.headers("alice"), timeout=30) as client:
        before = await post(client, write, "lobby", {"sender_id": "alice", "body": "before"})
        url = f"{read.url}/v1/rooms/lobby/messages/{before['message_id']}"
        assert (await client.get(url, params={"after_position": before["position"]})).status_code == 200
        if asks_first:
            second = services.forwarder(**static)

            async def refused() -> bool | None:
                output = second.output()
                return (
                    "UNRELEASED_INSTANCE_ID" in output or "still used by another member" in output
                ) or None

            await eventually(refused, 60.0, "the second worker refused the id the first one holds")
            first.kill()
        else:
            first.kill()
            services.forwarder(**static)
        after = await post(client, write, "lobby", {"sender_id": "alice", "body": "after"})
        url = f"{read.url}/v1/rooms/lobby/messages/{after['message_id']}"
        answer = await client.get(url, params={"after_position": after["position"]})
        assert answer.status_code == 200, answer.text
        assert answer.json()["seq"] == 2


async def test_a_worker_restarted_under_its_instance_id_resumes_before_its_session_times_out(
    sqlite_services: Services,
) -> None:
    # Classic protocol: the restarted member replaces the killed one at once. A 30 s session: a
    # worker that had to wait for it would miss the 15 s read wait.
    static = {
        "MERLIN_FORWARDER_INSTANCE_ID": "worker-1",
        "MERLIN_FORWARDER_SESSION_TIMEOUT_MS": "30000",
        "MERLIN_FORWARDER_GROUP_PROTOCOL": "classic",
    }
    await _killed_and_restarted(sqlite_services, static)


async def test_a_worker_restarted_under_its_instance_id_after_a_crash_resumes_once_the_session_ends(
    sqlite_services: Services,
) -> None:
    # Consumer group protocol: the broker refuses an id whose member's session lasts (librdkafka's
    # fatal UNRELEASED_INSTANCE_ID); the flow restarts with a new consumer until it is let in. The
    # new worker asks while the old one still lives, so the refusal cannot depend on how fast a
    # process starts; the old one then crashes, and its 6 s session ends inside the 15 s read wait.
    # Refused while it waits, the new worker's restart delay grows; capped at 1 s, its next attempt
    # after the session ends comes at once, where the 30 s default could fall past the read wait.
    static = {
        "MERLIN_FORWARDER_INSTANCE_ID": "worker-1",
        "MERLIN_FORWARDER_SESSION_TIMEOUT_MS": "6000",
        "MERLIN_FORWARDER_RESTART_MAX_BACKOFF": "1",
    }
    await _killed_and_restarted(sqlite_services, static, asks_first=True)
