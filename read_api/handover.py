"""Live rooms' subscribers, pure: bounded buffers, the fan-out of applied changes, and the hand-over from
a replay of the log to the live feed without a gap and without a repeat (decision 0025).

A subscriber registers with the fan-out first: from then on every change of its rooms that the feed
publishes is buffered for it, and ``start`` says, per partition, the first offset the feed will
publish after that moment. A subscriber that resumes from a position then replays the log from just
after it up to ``start`` (``replay_ranges``), and only then takes its buffered changes. ``Handover``
lets each change through once, in log order per partition: one at or before the last it let through
for its partition is one the subscriber has had already. Nothing here does I/O or waits, so every
interleaving of the feed, the replay and the subscriber can be tried (tests/unit/test_live_handover.py).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from domain.errors import InvalidCommand
from kernel.position import Position


@dataclass(frozen=True, slots=True)
class Change:
    """An event the projection applied, as a live room's subscriber receives it."""

    room_id: str
    position: Position
    event_type: str  # ``message.created`` or ``message.updated``
    # The message as the read API answered it right after the event, with ``event_id`` and ``position``.
    message: Mapping[str, Any]


class Subscription:
    """One subscriber's rooms and the changes buffered for it, at most ``capacity`` of them.

    A change offered to a full buffer is not kept: the subscription is *lagging* from then on,
    takes nothing more, and its stream ends telling the client to resume from the last change it
    had. So a subscriber that falls behind costs a bounded buffer, never the feed's time.
    """

    def __init__(self, rooms: frozenset[str], start: Mapping[int, int], capacity: int) -> None:
        self.rooms = rooms
        # Per partition, the first offset the feed publishes after this subscription registered.
        self.start = dict(start)
        self.capacity = capacity
        self.lagging = False
        self._buffer: deque[Change] = deque()
        self._arrived = asyncio.Event()

    def offer(self, change: Change) -> bool:
        """Buffer ``change``; False when the buffer was full (the subscription is lagging now)."""
        if self.lagging:
            return False
        if len(self._buffer) >= self.capacity:
            self.lagging = True
            self._buffer.clear()  # the client resumes from its last id: these would be sent again
            self._arrived.set()
            return False
        self._buffer.append(change)
        self._arrived.set()
        return True

    def take(self) -> list[Change]:
        """Every change buffered, oldest first; the buffer is empty after."""
        taken = list(self._buffer)
        self._buffer.clear()
        self._arrived.clear()
        return taken

    async def arrival(self, timeout: float) -> bool:
        """Wait until a change is buffered (or the subscription lags); False after ``timeout`` s."""
        try:
            await asyncio.wait_for(self._arrived.wait(), timeout)
        except TimeoutError:
            return False
        return True


class Fanout:
    """The feed's subscribers by room, and the offset it publishes next in each partition."""

    def __init__(self) -> None:
        self.next: dict[int, int] = {}
        self._by_room: dict[str, set[Subscription]] = {}
        self.count = 0

    def begin(self, starts: Mapping[int, int]) -> None:
        """The feed reads each partition from ``starts`` (where the projection has applied up to)."""
        for partition, offset in starts.items():
            self.next[partition] = max(self.next.get(partition, 0), offset)

    def subscribe(self, rooms: Iterable[str], capacity: int) -> Subscription:
        """A subscription to ``rooms``: every change of theirs published from now on is offered to it."""
        subscription = Subscription(frozenset(rooms), self.next, capacity)
        for room in subscription.rooms:
            self._by_room.setdefault(room, set()).add(subscription)
        self.count += 1
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Offer it nothing more (idempotent)."""
        removed = False
        for room in subscription.rooms:
            others = self._by_room.get(room)
            if others is not None and subscription in others:
                others.discard(subscription)
                removed = True
                if not others:
                    del self._by_room[room]
        if removed:
            self.count -= 1

    def publish(self, changes: Sequence[Change], through: Mapping[int, int]) -> list[Subscription]:
        """Offer ``changes`` (in log order per partition) to their rooms' subscribers; the feed has
        then passed offset ``through[p]`` of each partition. Returns the subscriptions that lagged
        (no longer subscribed)."""
        lagged: list[Subscription] = []
        for change in changes:
            for subscription in tuple(self._by_room.get(change.room_id, ())):
                if not subscription.offer(change):
                    self.unsubscribe(subscription)
                    lagged.append(subscription)
        for partition, last in through.items():
            self.next[partition] = max(self.next.get(partition, 0), last + 1)
        return lagged


def replay_ranges(
    resume: Mapping[int, int], start: Mapping[int, int], partitions: Iterable[int]
) -> dict[int, tuple[int, int]]:
    """Per partition of ``partitions`` that ``resume`` names, the offsets to read again from the log:
    from just after the resume point up to, not including, where the live feed took over."""
    ranges = {}
    for partition in partitions:
        if partition in resume:
            first, until = resume[partition] + 1, start.get(partition, 0)
            if first < until:
                ranges[partition] = (first, until)
    return ranges


class Handover:
    """Lets each change through once, in log order per partition: the replayed ones, then the live."""

    def __init__(self, subscription: Subscription, resume: Mapping[int, int]) -> None:
        self.subscription = subscription
        # Per partition, the last offset the subscriber has (told to it, or by its resume point).
        self.last = dict(resume)

    def admit(self, changes: Iterable[Change]) -> list[Change]:
        """Of ``changes``, those the subscriber has not had, in order."""
        admitted = []
        for change in changes:
            partition, offset = change.position.partition, change.position.offset
            if offset > self.last.get(partition, -1):
                self.last[partition] = offset
                admitted.append(change)
        return admitted

    def live(self) -> list[Change]:
        """The buffered live changes not had yet (call once the replay is over)."""
        return self.admit(self.subscription.take())

    def cursor(self) -> str:
        """The last position had per partition, as a multi-room stream's event id: ``0-15,3-42``."""
        return ",".join(f"{partition}-{offset}" for partition, offset in sorted(self.last.items()))


def parse_cursor(text: str, field: str) -> dict[int, int]:
    """The positions of a cursor (``Last-Event-ID``, ``after_position``): one, or several on distinct
    partitions, comma-separated. InvalidCommand naming ``field`` when it is not one."""
    positions: dict[int, int] = {}
    parts = text.split(",")
    if len(parts) > 1024:
        raise InvalidCommand(field, "names too many positions")
    for part in parts:
        position = Position.parse(part.strip(), field)
        if position.partition in positions:
            raise InvalidCommand(field, "names a partition twice")
        positions[position.partition] = position.offset
    return positions
