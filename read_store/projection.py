"""The projection's rules, pure: from a batch of log records and what the store holds, the changes.

Every replica that projects the same log reaches the same rows: outcomes depend
only on the records, their order, and the state the previous records produced.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, NamedTuple
from uuid import UUID

from domain import CommandRejected, Event, Message, MessageCreated, MessageUpdated, evolve, is_duplicate

MessageKey = tuple[str, UUID]
# The outcome code of an event whose record the read store refused to keep (e.g. a NUL character).
STORE_REFUSED = "store_refused"


# Record, ProjectedMessage and Outcome are made once or more per event: as named tuples they stay
# immutable and cost half of what a frozen dataclass does to build.
class Record(NamedTuple):
    """One log record; ``event`` is None for a poison record already sent to the dead-letter topic."""

    partition: int
    offset: int
    event: Event | None


class ProjectedMessage(NamedTuple):
    message: Message
    seq: int


class Outcome(NamedTuple):
    event: Event
    partition: int
    offset: int
    status: Literal["applied", "rejected"]
    code: str | None = None
    reason: str | None = None
    version: int | None = None


@dataclass(slots=True)
class Snapshot:
    """What the store holds for the keys a batch touches."""

    positions: dict[int, int] = field(default_factory=dict)  # partition -> last applied offset
    messages: dict[MessageKey, ProjectedMessage] = field(default_factory=dict)
    last_seq: dict[str, int] = field(default_factory=dict)
    # event id -> True when the projection applied it (not a duplicate), False otherwise
    seen_event_ids: dict[UUID, bool] = field(default_factory=dict)


@dataclass(slots=True)
class Changes:
    """What the store must write, in one transaction, for a batch."""

    messages: dict[MessageKey, ProjectedMessage] = field(default_factory=dict)
    last_seq: dict[str, int] = field(default_factory=dict)
    outcomes: list[Outcome] = field(default_factory=list)
    positions: dict[int, int] = field(default_factory=dict)
    replayed: int = 0  # records at or before a stored position, or events already seen
    # Records whose event the projection applied, now or in an earlier run: what goes downstream.
    deliverable: list[Record] = field(default_factory=list)

    def then(self, later: Changes) -> Changes:
        """These changes followed by ``later``'s (of the records right after these, stored after them)."""
        return Changes(
            messages={**self.messages, **later.messages},
            last_seq={**self.last_seq, **later.last_seq},
            outcomes=self.outcomes + later.outcomes,
            positions={**self.positions, **later.positions},
            replayed=self.replayed + later.replayed,
            deliverable=self.deliverable + later.deliverable,
        )


class Lookups(NamedTuple):
    """What the projection of a batch reads from the store, besides its partitions' positions."""

    keys: set[MessageKey]  # messages
    rooms: set[str]  # last seqs
    event_ids: set[UUID]  # outcomes


def partitions_of(records: Sequence[Record]) -> set[int]:
    """The partitions a batch comes from: their positions are read (and locked) first."""
    return {record.partition for record in records}


def lookups(records: Sequence[Record], positions: Mapping[int, int], *, assume_new: bool) -> Lookups:
    """What the projection of ``records`` must read from the store, given its ``positions``.

    Assuming new, it reads less: every event past its position is taken to have an id never
    seen, and every create a message not stored yet. Only the messages that updates change
    and the outcomes of replayed records (delivered again if applied) are read. The store's
    primary keys check the assumption: a wrong one makes the batch's writes clash.
    """
    keys: set[MessageKey] = set()
    rooms: set[str] = set()
    event_ids: set[UUID] = set()
    for record in records:
        event = record.event
        if event is None:
            continue
        rooms.add(event.room_id)
        replayed = record.offset <= positions.get(record.partition, -1)
        if not assume_new or replayed:
            event_ids.add(event.event_id)
        if not assume_new or (not replayed and isinstance(event, MessageUpdated)):
            keys.add((event.room_id, event.message_id))
    return Lookups(keys, rooms, event_ids)


def breaks_assumption(records: Sequence[Record], snapshot: Snapshot) -> bool:
    """Whether ``snapshot`` holds what ``lookups`` assuming new would take as absent: the id of an
    event past its position, or the message of a create."""
    for record in records:
        event = record.event
        if event is None or record.offset <= snapshot.positions.get(record.partition, -1):
            continue
        if event.event_id in snapshot.seen_event_ids:
            return True
        if isinstance(event, MessageCreated) and (event.room_id, event.message_id) in snapshot.messages:
            return True
    return False


def project(
    records: Sequence[Record], snapshot: Snapshot, refused: Mapping[tuple[int, int], str] | None = None
) -> Changes:
    """Apply ``records`` in order over ``snapshot``; return the changes to store.

    ``refused`` names records (partition, offset) the store would not keep, with its
    reason: their events are rejected (``store_refused``) instead of applied.
    """
    changes = Changes()
    positions = dict(snapshot.positions)
    messages = dict(snapshot.messages)
    last_seq = dict(snapshot.last_seq)
    seen = dict(snapshot.seen_event_ids)
    for record in records:
        if record.offset <= positions.get(record.partition, -1):
            changes.replayed += 1
            if record.event is not None and seen.get(record.event.event_id, False):
                changes.deliverable.append(record)
            continue
        positions[record.partition] = record.offset
        changes.positions[record.partition] = record.offset
        event = record.event
        if event is None:
            continue
        if event.event_id in seen:
            changes.replayed += 1
            continue
        seen[event.event_id] = False
        if refused and (reason := refused.get((record.partition, record.offset))) is not None:
            changes.outcomes.append(
                Outcome(event, record.partition, record.offset, "rejected", STORE_REFUSED, reason)
            )
            continue
        key = (event.room_id, event.message_id)
        current = messages.get(key)
        state = current.message if current is not None else None
        try:
            duplicate = is_duplicate(state, event)
        except CommandRejected as rejected:
            changes.outcomes.append(
                Outcome(event, record.partition, record.offset, "rejected", rejected.code, rejected.reason)
            )
            continue
        if duplicate:
            # The same create under another event id: one message, not two.
            changes.outcomes.append(
                Outcome(event, record.partition, record.offset, "applied", "duplicate", None, 1)
            )
            continue
        updated = evolve(state, event)
        if current is None:
            seq = last_seq.get(event.room_id, 0) + 1
            last_seq[event.room_id] = seq
            changes.last_seq[event.room_id] = seq
        else:
            seq = current.seq
        messages[key] = changes.messages[key] = ProjectedMessage(updated, seq)
        seen[event.event_id] = True
        changes.deliverable.append(record)
        changes.outcomes.append(
            Outcome(event, record.partition, record.offset, "applied", None, None, updated.version)
        )
    return changes
