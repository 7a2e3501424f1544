"""The projection's rules: what a batch of log records, over what the store holds, must write."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain import Event, Message, MessageCreated, MessageUpdated, decode, encode
from read_store.projection import (
    STORE_REFUSED,
    Changes,
    Outcome,
    ProjectedMessage,
    Record,
    Snapshot,
    breaks_assumption,
    lookups,
    project,
)
from tests.unit.strategies import events

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
ROOM = "r1"
MESSAGE = uuid.UUID(int=1)
KEY = (ROOM, MESSAGE)
CONFLICT = "message_id is already used by a message with other content"


def created(
    body: str = "hi", sender: str = "u1", room: str = ROOM, message: uuid.UUID = MESSAGE
) -> MessageCreated:
    return MessageCreated(uuid.uuid4(), room, message, sender, body, T0)


def updated(
    body: str, sender: str = "u1", expected: int | None = None, minutes: int = 1, message: uuid.UUID = MESSAGE
) -> MessageUpdated:
    at = T0 + timedelta(minutes=minutes)
    return MessageUpdated(uuid.uuid4(), ROOM, message, sender, body, at, expected)


def stored(body: str = "hi", sender: str = "u1", version: int = 1, message: uuid.UUID = MESSAGE) -> Message:
    """A message as the store holds it: created at T0, last updated ``version - 1`` minutes later."""
    return Message(ROOM, message, sender, body, version, T0, T0 + timedelta(minutes=version - 1))


def records_of(history: Sequence[Event | None], partition: int = 0, start: int = 0) -> list[Record]:
    """``history`` as consecutive records of one partition from offset ``start``."""
    return [Record(partition, start + offset, event) for offset, event in enumerate(history)]


def test_a_create_makes_a_message_at_version_one_with_seq_one() -> None:
    """A new message gets version 1 and the room's first seq; the create is applied and deliverable."""
    event = created("hello")
    [record] = records_of([event], start=5)
    changes = project([record], Snapshot())
    assert changes == Changes(
        messages={KEY: ProjectedMessage(Message(ROOM, MESSAGE, "u1", "hello", 1, T0, T0), seq=1)},
        last_seq={ROOM: 1},
        outcomes=[Outcome(event, 0, 5, "applied", version=1)],
        positions={0: 5},
        replayed=0,
        deliverable=[record],
    )


def test_a_repeated_create_in_the_same_batch_is_a_duplicate() -> None:
    """The same create under another event id leaves one message, consumes no seq and is not delivered."""
    first, retry = created("hi"), created("hi")
    records = records_of([first, retry])
    changes = project(records, Snapshot())
    assert changes == Changes(
        messages={KEY: ProjectedMessage(stored("hi"), seq=1)},
        last_seq={ROOM: 1},
        outcomes=[
            Outcome(first, 0, 0, "applied", version=1),
            Outcome(retry, 0, 1, "applied", "duplicate", None, 1),
        ],
        positions={0: 1},
        replayed=0,
        deliverable=[records[0]],
    )


def test_a_repeated_create_across_batches_is_a_duplicate() -> None:
    """A create of a message the store already holds writes no row, consumes no seq and is not delivered."""
    first, retry = created("hi"), created("hi")
    snapshot = Snapshot(
        positions={0: 0},
        messages={KEY: ProjectedMessage(stored("hi"), seq=1)},
        last_seq={ROOM: 1},
        seen_event_ids={first.event_id: True},
    )
    changes = project(records_of([retry], start=1), snapshot)
    assert changes == Changes(
        messages={},
        last_seq={},
        outcomes=[Outcome(retry, 0, 1, "applied", "duplicate", None, 1)],
        positions={0: 1},
        replayed=0,
        deliverable=[],
    )


@pytest.mark.parametrize(("body", "sender"), [("other", "u1"), ("hi", "u2"), ("other", "u2")])
def test_a_create_with_a_used_message_id_and_other_content_is_a_conflict(body: str, sender: str) -> None:
    """Another body or sender under a used message id is rejected; the first message stays as it was."""
    first, clash = created("hi"), created(body, sender)
    records = records_of([first, clash])
    changes = project(records, Snapshot())
    assert changes == Changes(
        messages={KEY: ProjectedMessage(stored("hi"), seq=1)},
        last_seq={ROOM: 1},
        outcomes=[
            Outcome(first, 0, 0, "applied", version=1),
            Outcome(clash, 0, 1, "rejected", "conflict", CONFLICT),
        ],
        positions={0: 1},
        replayed=0,
        deliverable=[records[0]],
    )


def test_an_update_bumps_the_version_and_keeps_the_seq() -> None:
    """An accepted update changes body, version and updated_at, and keeps the message's seq."""
    event = updated("edited", expected=1, minutes=5)
    [record] = records_of([event], start=3)
    snapshot = Snapshot(
        positions={0: 2}, messages={KEY: ProjectedMessage(stored("hi"), seq=7)}, last_seq={ROOM: 9}
    )
    changes = project([record], snapshot)
    expected_message = Message(ROOM, MESSAGE, "u1", "edited", 2, T0, T0 + timedelta(minutes=5))
    assert changes == Changes(
        messages={KEY: ProjectedMessage(expected_message, seq=7)},
        last_seq={},
        outcomes=[Outcome(event, 0, 3, "applied", version=2)],
        positions={0: 3},
        replayed=0,
        deliverable=[record],
    )


def test_updates_in_one_batch_chain_on_each_other() -> None:
    """Each update in a batch sees the version the one before it made."""
    first, second, unchecked = updated("b", expected=1), updated("c", expected=2, minutes=2), updated("d")
    records = records_of([first, second, unchecked], start=1)
    snapshot = Snapshot(positions={0: 0}, messages={KEY: ProjectedMessage(stored("a"), seq=1)})
    changes = project(records, snapshot)
    assert changes.messages == {
        KEY: ProjectedMessage(Message(ROOM, MESSAGE, "u1", "d", 4, T0, T0 + timedelta(minutes=1)), seq=1)
    }
    assert [(o.status, o.code, o.version) for o in changes.outcomes] == [
        ("applied", None, 2),
        ("applied", None, 3),
        ("applied", None, 4),
    ]
    assert changes.deliverable == records
    assert changes.last_seq == {}


@pytest.mark.parametrize(
    ("event", "code", "reason"),
    [
        (updated("c", expected=1), "version_conflict", "expected version 1, message is at version 2"),
        (updated("c", expected=3), "version_conflict", "expected version 3, message is at version 2"),
        (updated("c", sender="mallory"), "forbidden", "only the original sender may edit a message"),
        (updated("c", message=uuid.UUID(int=2)), "not_found", "no such message in this room"),
    ],
    ids=["stale", "ahead", "wrong-sender", "unknown-message"],
)
def test_a_refused_update_changes_nothing(event: MessageUpdated, code: str, reason: str) -> None:
    """A refused update records its code and reason, writes no message and is not delivered."""
    snapshot = Snapshot(
        positions={0: 3}, messages={KEY: ProjectedMessage(stored("b", version=2), seq=4)}, last_seq={ROOM: 4}
    )
    changes = project(records_of([event], start=4), snapshot)
    assert changes == Changes(
        messages={},
        last_seq={},
        outcomes=[Outcome(event, 0, 4, "rejected", code, reason)],
        positions={0: 4},
        replayed=0,
        deliverable=[],
    )


def test_an_update_before_its_create_in_the_log_is_not_found() -> None:
    """Log order decides: an update that precedes its create is rejected; the create then applies."""
    early, create = updated("b"), created("a")
    records = records_of([early, create])
    changes = project(records, Snapshot())
    assert changes.outcomes == [
        Outcome(early, 0, 0, "rejected", "not_found", "no such message in this room"),
        Outcome(create, 0, 1, "applied", version=1),
    ]
    assert changes.messages == {KEY: ProjectedMessage(stored("a"), seq=1)}
    assert changes.deliverable == [records[1]]


def test_seq_is_gap_free_per_room_and_continues_from_the_store() -> None:
    """Interleaved creates get 1..n per room, after the room's stored last seq; other events take none."""
    ids = [uuid.UUID(int=n) for n in range(100, 106)]
    a1 = MessageCreated(uuid.uuid4(), "ra", ids[0], "u1", "a1", T0)
    b1 = MessageCreated(uuid.uuid4(), "rb", ids[1], "u1", "b1", T0)
    a1_retry = MessageCreated(uuid.uuid4(), "ra", ids[0], "u1", "a1", T0)
    a1_clash = MessageCreated(uuid.uuid4(), "ra", ids[0], "u2", "a1", T0)
    a1_edit = MessageUpdated(uuid.uuid4(), "ra", ids[0], "u1", "a1'", T0, 1)
    a_missing = MessageUpdated(uuid.uuid4(), "ra", ids[5], "u1", "x", T0)
    a2 = MessageCreated(uuid.uuid4(), "ra", ids[2], "u1", "a2", T0)
    c1 = MessageCreated(uuid.uuid4(), "rc", ids[3], "u1", "c1", T0)
    b2 = MessageCreated(uuid.uuid4(), "rb", ids[4], "u1", "b2", T0)
    a3 = MessageCreated(uuid.uuid4(), "ra", uuid.UUID(int=106), "u1", "a3", T0)
    records = [
        Record(0, 10, a1),
        Record(1, 20, b1),
        Record(0, 11, a1_retry),
        Record(0, 12, a1_clash),
        Record(0, 13, a1_edit),
        Record(0, 14, a_missing),
        Record(0, 15, a2),
        Record(2, 0, c1),
        Record(1, 21, b2),
        Record(0, 16, a3),
    ]
    snapshot = Snapshot(positions={0: 9, 1: 19}, last_seq={"ra": 4, "rb": 0})
    changes = project(records, snapshot)
    seqs = {key: projected.seq for key, projected in changes.messages.items()}
    assert seqs == {
        ("ra", ids[0]): 5,
        ("rb", ids[1]): 1,
        ("ra", ids[2]): 6,
        ("rc", ids[3]): 1,
        ("rb", ids[4]): 2,
        ("ra", uuid.UUID(int=106)): 7,
    }
    assert changes.last_seq == {"ra": 7, "rb": 2, "rc": 1}
    assert changes.positions == {0: 16, 1: 21, 2: 0}
    assert changes.messages[("ra", ids[0])].message.version == 2
    assert [(o.event, o.status, o.code) for o in changes.outcomes] == [
        (a1, "applied", None),
        (b1, "applied", None),
        (a1_retry, "applied", "duplicate"),
        (a1_clash, "rejected", "conflict"),
        (a1_edit, "applied", None),
        (a_missing, "rejected", "not_found"),
        (a2, "applied", None),
        (c1, "applied", None),
        (b2, "applied", None),
        (a3, "applied", None),
    ]
    assert [record.event for record in changes.deliverable] == [a1, b1, a1_edit, a2, c1, b2, a3]


def test_records_up_to_the_stored_position_are_replayed_and_the_applied_ones_redelivered() -> None:
    """Records at or before the position are skipped; those the projection applied are still deliverable."""
    create, retry = created("a"), created("a")
    edit, refused = updated("b", expected=1), updated("x", "mallory")
    later_edit, other = updated("c", expected=2, minutes=2), created("z", message=uuid.UUID(int=2))
    records = records_of([create, retry, edit, refused, None, later_edit, other])
    snapshot = Snapshot(
        positions={0: 4},
        messages={KEY: ProjectedMessage(stored("b", version=2), seq=1)},
        last_seq={ROOM: 1},
        seen_event_ids={
            create.event_id: True,
            retry.event_id: False,
            edit.event_id: True,
            refused.event_id: False,
        },
    )
    changes = project(records, snapshot)
    assert changes == Changes(
        messages={
            KEY: ProjectedMessage(Message(ROOM, MESSAGE, "u1", "c", 3, T0, T0 + timedelta(minutes=2)), seq=1),
            (ROOM, uuid.UUID(int=2)): ProjectedMessage(
                Message(ROOM, uuid.UUID(int=2), "u1", "z", 1, T0, T0), seq=2
            ),
        },
        last_seq={ROOM: 2},
        outcomes=[
            Outcome(later_edit, 0, 5, "applied", version=3),
            Outcome(other, 0, 6, "applied", version=1),
        ],
        positions={0: 6},
        replayed=5,
        deliverable=[records[0], records[2], records[5], records[6]],
    )


def test_a_batch_wholly_before_the_position_changes_nothing() -> None:
    """A batch already projected moves no position and writes nothing but its redeliveries."""
    create = created("a")
    records = records_of([create, None])
    snapshot = Snapshot(
        positions={0: 1},
        messages={KEY: ProjectedMessage(stored("a"), seq=1)},
        last_seq={ROOM: 1},
        seen_event_ids={create.event_id: True},
    )
    assert project(records, snapshot) == Changes(replayed=2, deliverable=[records[0]])


def test_an_event_seen_at_an_earlier_offset_is_not_applied_twice() -> None:
    """An event id written again later in the log (a producer retry) moves the position and nothing else."""
    create, edit = created("a"), updated("b")
    records = records_of([create, edit, edit, create])
    changes = project(records, Snapshot())
    edited = Message(ROOM, MESSAGE, "u1", "b", 2, T0, T0 + timedelta(minutes=1))
    assert changes == Changes(
        messages={KEY: ProjectedMessage(edited, seq=1)},
        last_seq={ROOM: 1},
        outcomes=[Outcome(create, 0, 0, "applied", version=1), Outcome(edit, 0, 1, "applied", version=2)],
        positions={0: 3},
        replayed=2,
        deliverable=[records[0], records[1]],
    )


def test_an_event_seen_in_an_earlier_batch_is_not_applied_twice() -> None:
    """An event id the store has seen, met again past the position, is skipped as replayed."""
    edit = updated("b")
    snapshot = Snapshot(
        positions={0: 1},
        messages={KEY: ProjectedMessage(stored("b", version=2), seq=1)},
        last_seq={ROOM: 1},
        seen_event_ids={edit.event_id: True},
    )
    changes = project(records_of([edit], start=2), snapshot)
    assert changes == Changes(positions={0: 2}, replayed=1)


def test_a_poison_record_moves_the_position_and_yields_no_outcome() -> None:
    """A record whose event went to the dead-letter topic only advances its partition."""
    create = created("a")
    records = [Record(3, 7, None), Record(0, 0, create), Record(3, 8, None)]
    changes = project(records, Snapshot(positions={3: 6}))
    assert changes == Changes(
        messages={KEY: ProjectedMessage(stored("a"), seq=1)},
        last_seq={ROOM: 1},
        outcomes=[Outcome(create, 0, 0, "applied", version=1)],
        positions={3: 8, 0: 0},
        replayed=0,
        deliverable=[records[1]],
    )


REFUSAL = "the read store cannot keep a NUL character (U+0000)"


def test_a_record_the_store_refused_is_rejected_with_its_reason_and_changes_nothing_else() -> None:
    """A refused create or update records store_refused and the store's reason; it moves the position
    but writes no message, takes no seq and is not delivered: the next create gets the seq it would have."""
    first, refused_create = created("a"), created("b\x00", message=uuid.UUID(int=2))
    refused_edit, edit = updated("a\x00", expected=1), updated("c", expected=1, minutes=2)
    later = created("d", message=uuid.UUID(int=3))
    records = records_of([first, refused_create, refused_edit, edit, later], start=10)
    snapshot = Snapshot(positions={0: 9}, last_seq={ROOM: 4})
    changes = project(records, snapshot, {(0, 11): REFUSAL, (0, 12): "another reason"})
    assert STORE_REFUSED == "store_refused"
    assert changes == Changes(
        messages={
            KEY: ProjectedMessage(Message(ROOM, MESSAGE, "u1", "c", 2, T0, T0 + timedelta(minutes=2)), seq=5),
            (ROOM, uuid.UUID(int=3)): ProjectedMessage(
                Message(ROOM, uuid.UUID(int=3), "u1", "d", 1, T0, T0), seq=6
            ),
        },
        last_seq={ROOM: 6},
        outcomes=[
            Outcome(first, 0, 10, "applied", version=1),
            Outcome(refused_create, 0, 11, "rejected", "store_refused", REFUSAL),
            Outcome(refused_edit, 0, 12, "rejected", "store_refused", "another reason"),
            Outcome(edit, 0, 13, "applied", version=2),
            Outcome(later, 0, 14, "applied", version=1),
        ],
        positions={0: 14},
        replayed=0,
        deliverable=[records[0], records[3], records[4]],
    )


def test_a_refused_record_last_in_its_partition_still_moves_the_position() -> None:
    """A batch of only a refused record writes its position and its outcome, nothing else."""
    event = created("x\x00")
    records = [Record(2, 7, event)]
    changes = project(records, Snapshot(positions={2: 6}), {(2, 7): REFUSAL})
    assert changes == Changes(
        outcomes=[Outcome(event, 2, 7, "rejected", STORE_REFUSED, REFUSAL)], positions={2: 7}
    )


def test_refused_only_names_records_by_partition_and_offset() -> None:
    """The same offset in another partition is applied as usual."""
    refused, other = created("a\x00"), created("b", message=uuid.UUID(int=2))
    records = [Record(0, 3, refused), Record(1, 3, other)]
    changes = project(records, Snapshot(), {(0, 3): REFUSAL})
    assert [(o.partition, o.status, o.code) for o in changes.outcomes] == [
        (0, "rejected", STORE_REFUSED),
        (1, "applied", None),
    ]
    assert changes.deliverable == [records[1]]
    assert changes.last_seq == {ROOM: 1}


def test_a_refused_record_already_projected_or_seen_is_just_replayed() -> None:
    """The replay rules come first: at or before the position, or an event id already seen, a refused
    record is replayed (redelivered if it was applied then), with no outcome."""
    applied, rejected, repeated = created("a"), updated("x", "mallory"), created("a")
    records = [Record(0, 4, applied), Record(0, 5, rejected), Record(0, 6, applied), Record(1, 0, repeated)]
    snapshot = Snapshot(
        positions={0: 5},
        messages={KEY: ProjectedMessage(stored("a"), seq=1)},
        last_seq={ROOM: 1},
        seen_event_ids={applied.event_id: True, rejected.event_id: False, repeated.event_id: False},
    )
    refused = {(0, 4): REFUSAL, (0, 5): REFUSAL, (0, 6): REFUSAL, (1, 0): REFUSAL}
    changes = project(records, snapshot, refused)
    assert changes == Changes(positions={0: 6, 1: 0}, replayed=4, deliverable=[records[0]])


def stored_after(snapshot: Snapshot, changes: Changes) -> Snapshot:
    """What the store holds once ``changes`` are written over ``snapshot`` (as the writer does)."""
    seen = dict(snapshot.seen_event_ids)
    for outcome in changes.outcomes:
        seen[outcome.event.event_id] = outcome.status == "applied" and outcome.code != "duplicate"
    return Snapshot(
        positions={**snapshot.positions, **changes.positions},
        messages={**snapshot.messages, **changes.messages},
        last_seq={**snapshot.last_seq, **changes.last_seq},
        seen_event_ids=seen,
    )


def test_then_joins_the_changes_of_consecutive_batches_as_one() -> None:
    """Projecting a batch in two parts, the second over what the first stored, then joining the changes,
    gives what projecting it at once gives: messages, seqs, outcomes, positions, replays, deliveries."""
    a, b, retry = created("a"), created("b", message=uuid.UUID(int=2)), created("a")
    edit, stale = updated("a2", expected=1), updated("a3", expected=1, minutes=2)
    records = [
        Record(0, 0, a),
        Record(1, 0, b),
        Record(0, 1, None),
        Record(0, 2, edit),
        Record(1, 1, retry),
        Record(0, 3, edit),
        Record(1, 2, stale),
    ]
    first = project(records[:3], Snapshot())
    joined = first.then(project(records[3:], stored_after(Snapshot(), first)))
    whole = project(records, Snapshot())
    assert joined == whole
    assert (whole.replayed, whole.positions, whole.last_seq) == (1, {0: 3, 1: 2}, {ROOM: 2})
    assert whole.deliverable == [records[0], records[1], records[3]]


def test_then_keeps_the_first_changes_unchanged() -> None:
    """Joining builds new changes; neither part is modified."""
    first = project(records_of([created("a")]), Snapshot())
    before = replace(first, outcomes=list(first.outcomes), deliverable=list(first.deliverable))
    later = project(records_of([updated("b")], start=1), stored_after(Snapshot(), first))
    joined = first.then(later)
    assert first == before
    assert joined.outcomes == first.outcomes + later.outcomes


def test_a_refused_record_applied_alone_between_its_neighbours_joins_as_if_refused_in_one_batch() -> None:
    """What the flow does after isolating a refused record (before, it alone, after: each over what the
    previous stored) equals projecting the whole batch with that record refused."""
    history: list[Event | None] = [created("a"), created("b\x00", message=uuid.UUID(int=2)), None]
    history += [created("c", message=uuid.UUID(int=3)), updated("a2")]
    records = records_of(history)
    refused = {(0, 1): REFUSAL}
    snapshot, joined = Snapshot(), Changes()
    for part, refusing in [(records[:1], None), (records[1:2], refused), (records[2:], None)]:
        changes = project(part, snapshot, refusing)
        snapshot, joined = stored_after(snapshot, changes), joined.then(changes)
    assert joined == project(records, Snapshot(), refused)
    assert [seq.seq for seq in joined.messages.values()] == [1, 2]


# Events drawn onto a few rooms, messages and senders, so that creates repeat and clash and updates land.
_rooms = st.sampled_from(["r1", "r2"])
_message_ids = st.sampled_from([uuid.UUID(int=n) for n in range(3)])
_senders = st.sampled_from(["u1", "u2"])


@st.composite
def _colliding(draw: st.DrawFn) -> Event:
    event = draw(events)
    room, message, sender = draw(_rooms), draw(_message_ids), draw(_senders)
    if isinstance(event, MessageUpdated):
        expected = draw(st.none() | st.integers(1, 4))
        return replace(event, room_id=room, message_id=message, sender_id=sender, expected_version=expected)
    body = draw(st.sampled_from(["a", "b"]))
    return replace(event, room_id=room, message_id=message, sender_id=sender, body=body)


@given(st.lists(events | _colliding(), max_size=30))
def test_projecting_the_same_events_always_gives_the_same_changes(history: list[Event]) -> None:
    """A replica projects what it decoded from the log and must land on the same state."""
    replayed = [decode(encode(event)) for event in history]
    assert project(records_of(replayed), Snapshot()) == project(records_of(history), Snapshot())


@st.composite
def _split(draw: st.DrawFn) -> tuple[list[Record], int]:
    """Records of two partitions, event ids repeating now and then, and a place to cut them."""
    pool = draw(st.lists(events | _colliding(), min_size=1, max_size=8))
    history = draw(st.lists(st.none() | st.sampled_from(pool), max_size=20))
    partitions = draw(st.lists(st.integers(0, 1), min_size=len(history), max_size=len(history)))
    next_offset = [0, 0]
    records = []
    for event, partition in zip(history, partitions, strict=True):
        records.append(Record(partition, next_offset[partition], event))
        next_offset[partition] += 1
    return records, draw(st.integers(0, len(records)))


@given(_split())
def test_then_of_two_consecutive_projections_is_one_projection(split: tuple[list[Record], int]) -> None:
    """For any batch and any cut, the two parts projected in turn and joined equal the whole."""
    records, cut = split
    first = project(records[:cut], Snapshot())
    second = project(records[cut:], stored_after(Snapshot(), first))
    assert first.then(second) == project(records, Snapshot())


def _read(store: Snapshot, batch: Sequence[Record], *, assume_new: bool) -> Snapshot:
    """What the writer reads of ``store`` for ``batch``: its positions, then what ``lookups`` names."""
    wanted = lookups(batch, store.positions, assume_new=assume_new)
    return Snapshot(
        positions=dict(store.positions),
        messages={key: kept for key, kept in store.messages.items() if key in wanted.keys},
        last_seq={room: seq for room, seq in store.last_seq.items() if room in wanted.rooms},
        seen_event_ids={id_: ok for id_, ok in store.seen_event_ids.items() if id_ in wanted.event_ids},
    )


@given(_split(), st.data())
def test_a_batch_read_assuming_new_projects_as_read_whole_or_its_writes_clash(
    split: tuple[list[Record], int], data: st.DataObject
) -> None:
    """Whatever the store holds (the records before the cut) and wherever the batch starts (replays
    included): read whole, a batch projects exactly; read assuming new, it projects the same, or
    writes an outcome or a new message under a key the store holds, which its primary key refuses."""
    records, cut = split
    store = stored_after(Snapshot(), project(records[:cut], Snapshot()))
    batch = records[data.draw(st.integers(0, cut)) :]
    exact = project(batch, store)
    assert project(batch, _read(store, batch, assume_new=False)) == exact
    assumed = _read(store, batch, assume_new=True)
    guessed = project(batch, assumed)
    new_messages = {key for key in guessed.messages if key not in assumed.messages}
    clashes = bool(new_messages & store.messages.keys()) or any(
        outcome.event.event_id in store.seen_event_ids for outcome in guessed.outcomes
    )
    assert guessed == exact or clashes
    if not breaks_assumption(batch, store):
        assert guessed == exact
    if clashes:
        assert breaks_assumption(batch, store)
