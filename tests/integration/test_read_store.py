"""One contract for the read store, run on SQLite and on the real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from domain import Event, MessageCreated, MessageUpdated
from kernel.position import Position
from read_store.dialect import NUL_REFUSED
from read_store.engines import create_engine
from read_store.migrate import upgrade
from read_store.projection import Record
from read_store.reader import ReadStore
from read_store.writer import ProjectionStore, StoreRefused
from tests.conftest import PostgresSchema

TOPIC = "events"
T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def created(room: str, body: str, sender: str = "u1", message_id: uuid.UUID | None = None) -> MessageCreated:
    return MessageCreated(uuid.uuid4(), room, message_id or uuid.uuid4(), sender, body, T0)


def updated(of: MessageCreated, body: str, sender: str = "u1", expected: int | None = None) -> MessageUpdated:
    return MessageUpdated(
        uuid.uuid4(), of.room_id, of.message_id, sender, body, T0 + timedelta(seconds=1), expected
    )


def records(events: list[Event | None], partition: int = 0, start: int = 0) -> list[Record]:
    return [Record(partition, start + n, event) for n, event in enumerate(events)]


class ReadStoreContract:
    """The assertions every read-store backend must pass."""

    # Each backend's subclass provides the ``engines`` fixture: (writer, reader).

    @pytest.fixture
    async def stores(
        self, engines: tuple[AsyncEngine, AsyncEngine]
    ) -> AsyncIterator[tuple[ProjectionStore, ReadStore]]:
        writer, reader = engines
        reads = ReadStore(reader, TOPIC)
        yield ProjectionStore(writer, TOPIC), reads
        await reads.close()

    async def test_creates_and_updates_are_readable(self, stores: tuple[ProjectionStore, ReadStore]) -> None:
        projection, reads = stores
        first = created("r1", "hello")
        await projection.apply(records([first, updated(first, "hello!", expected=1)]))
        message = await reads.message("r1", str(first.message_id))
        assert message is not None
        assert (message["body"], message["version"], message["seq"]) == ("hello!", 2, 1)
        assert message["created_at"] == "2026-11-23T12:00:00.000000Z"
        assert message["updated_at"] == "2026-11-23T12:00:01.000000Z"
        assert await reads.message("r1", str(uuid.uuid4())) is None

    async def test_seq_is_gap_free_per_room_in_log_order(
        self, stores: tuple[ProjectionStore, ReadStore]
    ) -> None:
        projection, reads = stores
        events: list[Event | None] = [created(f"r{n % 3}", f"m{n}") for n in range(30)]
        await projection.apply(records(events[:10]))
        await projection.apply(records(events[10:], start=10))
        for room in ("r0", "r1", "r2"):
            page = await reads.page(room, None, None, 100)
            assert [m["seq"] for m in page] == list(range(1, 11))
            assert [m["body"] for m in page] == [f"m{n}" for n in range(30) if f"r{n % 3}" == room]

    async def test_keyset_pages_forwards_and_backwards(
        self, stores: tuple[ProjectionStore, ReadStore]
    ) -> None:
        projection, reads = stores
        await projection.apply(records([created("r1", f"m{n}") for n in range(1, 26)]))
        assert [m["seq"] for m in await reads.page("r1", None, None, 10)] == list(range(1, 11))
        assert [m["seq"] for m in await reads.page("r1", 10, None, 10)] == list(range(11, 21))
        assert [m["seq"] for m in await reads.page("r1", 20, None, 10)] == list(range(21, 26))
        assert [m["seq"] for m in await reads.page("r1", None, 11, 5)] == list(range(6, 11))
        assert [m["seq"] for m in await reads.page("r1", 3, 8, 10)] == [4, 5, 6, 7]
        assert await reads.page("nobody", None, None, 10) == []

    async def test_a_replayed_batch_changes_nothing(self, stores: tuple[ProjectionStore, ReadStore]) -> None:
        projection, reads = stores
        first = created("r1", "a")
        batch = records([first, updated(first, "b")])
        await projection.apply(batch)
        again = await projection.apply(batch)
        assert again.replayed == 2
        assert not again.outcomes
        assert again.deliverable == batch  # applied before: delivered again
        message = await reads.message("r1", str(first.message_id))
        assert message is not None
        assert message["version"] == 2
        assert await reads.positions() == {0: 1}

    async def test_refused_updates_are_recorded_with_their_reason(
        self, stores: tuple[ProjectionStore, ReadStore]
    ) -> None:
        projection, reads = stores
        first = created("r1", "a", sender="alice")
        stale = updated(first, "c", sender="alice", expected=1)
        foreign = updated(first, "d", sender="mallory")
        await projection.apply(records([first, updated(first, "b", sender="alice"), stale, foreign]))
        stale_outcome = await reads.outcome(str(stale.event_id))
        foreign_outcome = await reads.outcome(str(foreign.event_id))
        assert stale_outcome is not None
        assert foreign_outcome is not None
        assert stale_outcome["status"] == "rejected"
        assert stale_outcome["rejection"]["code"] == "version_conflict"
        assert foreign_outcome["rejection"]["code"] == "forbidden"
        applied = await reads.outcome(str(first.event_id))
        assert applied is not None
        assert (applied["status"], applied["version"], applied["position"]) == ("applied", 1, "0-0")
        assert await reads.outcome(str(uuid.uuid4())) is None

    async def test_a_repeated_create_is_one_message(self, stores: tuple[ProjectionStore, ReadStore]) -> None:
        projection, reads = stores
        first = created("r1", "same")
        retry = MessageCreated(uuid.uuid4(), "r1", first.message_id, "u1", "same", T0)
        clash = MessageCreated(uuid.uuid4(), "r1", first.message_id, "u1", "other", T0)
        await projection.apply(records([first, first, retry, clash]))
        assert [m["body"] for m in await reads.page("r1", None, None, 10)] == ["same"]
        clash_outcome = await reads.outcome(str(clash.event_id))
        assert clash_outcome is not None
        assert clash_outcome["rejection"]["code"] == "conflict"

    async def test_events_stored_in_earlier_batches_are_caught_however_the_batch_is_read(
        self, stores: tuple[ProjectionStore, ReadStore]
    ) -> None:
        """A batch is first written assuming its events new; one repeating what the store holds
        clashes, is rolled back and read whole, and the batches after it still apply."""
        projection, reads = stores
        first = created("r1", "a")
        await projection.apply(records([first]))
        retry = MessageCreated(uuid.uuid4(), "r1", first.message_id, "u1", "a", T0)
        clash = MessageCreated(uuid.uuid4(), "r1", first.message_id, "u1", "other", T0)
        second, edit = created("r1", "b"), updated(first, "a2", expected=1)
        changes = await projection.apply(records([first, second, retry, clash, edit], start=1))
        assert changes.replayed == 1  # ``first`` again, under its own event id
        assert [(o.event, o.status, o.code) for o in changes.outcomes] == [
            (second, "applied", None),
            (retry, "applied", "duplicate"),
            (clash, "rejected", "conflict"),
            (edit, "applied", None),
        ]
        events: list[Event] = [first, second, retry, clash, edit]
        assert await reads.applied([str(e.event_id) for e in events]) == {
            str(e.event_id) for e in (first, second, edit)
        }
        resent = await projection.apply(records([second], start=6))
        assert (resent.replayed, resent.outcomes) == (1, [])
        await projection.apply(records([created("r1", "c")], start=7))
        page = await reads.page("r1", None, None, 10)
        assert [(m["body"], m["version"], m["seq"]) for m in page] == [("a2", 2, 1), ("b", 1, 2), ("c", 1, 3)]
        assert await reads.positions() == {0: 7}

    async def test_poison_records_move_the_position(self, stores: tuple[ProjectionStore, ReadStore]) -> None:
        projection, reads = stores
        await projection.apply(records([None, created("r1", "after poison")], partition=2, start=7))
        assert await reads.positions() == {2: 8}
        assert await reads.wait_for(Position(2, 8), timeout=0.1)
        assert not await reads.wait_for(Position(2, 9), timeout=0.05)
        assert await projection.load_positions() == {2: 8}

    @pytest.mark.parametrize("refused_at", [0, 1], ids=["create", "update"])
    async def test_a_record_the_store_refuses_writes_nothing_until_named_then_is_rejected(
        self, stores: tuple[ProjectionStore, ReadStore], refused_at: int
    ) -> None:
        projection, reads = stores
        first = created("r1", "fine")
        bad: Event = created("r1", "a\x00b") if refused_at == 0 else updated(first, "a\x00b")
        batch = records([first, bad, created("r1", "after")]) if refused_at == 0 else records([first, bad])
        with pytest.raises(StoreRefused) as caught:
            await projection.apply(batch)
        assert caught.value.reason == NUL_REFUSED  # the same words from either store
        assert await reads.positions() == {}
        assert await reads.message("r1", str(first.message_id)) is None

        await projection.apply(batch, refused={(0, 1): caught.value.reason})
        assert await reads.positions() == {0: len(batch) - 1}
        outcome = await reads.outcome(str(bad.event_id))
        assert outcome is not None
        assert (outcome["status"], outcome["rejection"]) == (
            "rejected",
            {"code": "store_refused", "reason": NUL_REFUSED},
        )
        page = await reads.page("r1", None, None, 10)
        assert [(m["body"], m["version"], m["seq"]) for m in page] == [("fine", 1, 1)] + (
            [("after", 1, 2)] if refused_at == 0 else []
        )

    async def test_a_refused_update_of_a_stored_message_changes_nothing_until_named(
        self, stores: tuple[ProjectionStore, ReadStore]
    ) -> None:
        # An update of a message an earlier batch stored replaces its row (on PostgreSQL through
        # a temporary table), unlike a message new to the batch.
        projection, reads = stores
        first = created("r1", "fine")
        await projection.apply(records([first]))
        bad = records([updated(first, "a\x00b")], start=1)
        with pytest.raises(StoreRefused) as caught:
            await projection.apply(bad)
        assert caught.value.reason == NUL_REFUSED
        assert await reads.positions() == {0: 0}

        await projection.apply(bad, refused={(0, 1): caught.value.reason})
        # The next batches write through the same temporary table, emptied by each commit.
        for offset, body in ((2, "better"), (3, "best")):
            await projection.apply(records([updated(first, body)], start=offset))
        assert await reads.positions() == {0: 3}
        page = await reads.page("r1", None, None, 10)
        assert [(m["body"], m["version"], m["seq"]) for m in page] == [("best", 3, 1)]


class TestSQLite(ReadStoreContract):
    @pytest.fixture
    async def engines(self, tmp_path: Path) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
        url = f"sqlite:///{tmp_path / 'read.db'}"
        await upgrade(url)
        writer, reader = create_engine(url, writer=True), create_engine(url)
        yield writer, reader
        await writer.dispose()
        await reader.dispose()


class TestPostgreSQL(ReadStoreContract):
    @pytest.fixture
    async def engines(
        self, postgres_schema: PostgresSchema
    ) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
        url, schema = postgres_schema.url, postgres_schema.schema
        await upgrade(url, schema=schema)
        writer, reader = create_engine(url, writer=True, schema=schema), create_engine(url, schema=schema)
        yield writer, reader
        await writer.dispose()
        await reader.dispose()


async def test_a_postgresql_store_written_before_ids_were_uuid_is_read_and_projected_after_0004(
    postgres_schema: PostgresSchema,
) -> None:
    """Migration 0004 turns the text ids an older projection wrote into ``uuid``: they read back the
    same, and the projection goes on from them (an edit finds its message, a replay its outcome)."""
    url, schema = postgres_schema.url, postgres_schema.schema
    await upgrade(url, schema=schema, revision="0003")
    first = created("r1", "hello")
    # The rows the projection wrote for ``first`` at offset 0, ids as text as they were then.
    connection = await asyncpg.connect(postgres_schema.dsn, server_settings={"search_path": schema})
    try:
        await connection.execute(
            "INSERT INTO messages VALUES ($1, $2, 'u1', 'hello', 1, 1, $3, $3)",
            "r1", str(first.message_id), T0,
        )  # fmt: skip
        await connection.execute("INSERT INTO rooms VALUES ('r1', 1)")
        await connection.execute(
            "INSERT INTO event_outcomes"
            " VALUES ($1, 'MessageCreated', 'r1', $2, 'applied', NULL, NULL, 1, 0, 0, $3)",
            str(first.event_id), str(first.message_id), T0,
        )  # fmt: skip
        await connection.execute("INSERT INTO positions VALUES ($1, 0, 0, $2)", TOPIC, T0)
    finally:
        await connection.close()

    await upgrade(url, schema=schema)
    writer, reader = create_engine(url, writer=True, schema=schema), create_engine(url, schema=schema)
    reads = ReadStore(reader, TOPIC)
    try:
        # The same create again under a new offset (a re-sent event), then an edit.
        again = Record(0, 1, first)
        changes = await ProjectionStore(writer, TOPIC).apply(
            [again, Record(0, 2, updated(first, "hello!", expected=1))]
        )
        assert changes.replayed == 1  # the create's event id was found, as uuid
        outcome = await reads.outcome(str(first.event_id))
        assert outcome is not None
        assert outcome["message_id"] == str(first.message_id)
        message = await reads.message("r1", str(first.message_id))
        assert message is not None
        assert (message["message_id"], message["body"], message["version"], message["seq"]) == (
            str(first.message_id), "hello!", 2, 1,
        )  # fmt: skip
    finally:
        await reads.close()
        await writer.dispose()
        await reader.dispose()
