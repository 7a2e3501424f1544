"""Live rooms' hand-over from a replay to the live feed: no loss, no repeat, in log order, whatever the
interleaving of the feed, the replay and the subscriber; bounded buffers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.errors import InvalidCommand
from kernel.position import Position
from read_api.handover import Change, Fanout, Handover, Subscription, parse_cursor, replay_ranges

ROOMS = ("r0", "r1", "r2", "r3")


@dataclass(frozen=True)
class Record:
    room: str
    applied: bool


def change(room: str, partition: int, offset: int) -> Change:
    return Change(room, Position(partition, offset), "message.created", {"room_id": room})


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, object]:
    partitions = draw(st.integers(1, 3))
    placement = {room: draw(st.integers(0, partitions - 1)) for room in ROOMS}
    log = {
        p: [
            Record(room, applied)
            for room, applied in draw(st.lists(st.tuples(st.sampled_from(ROOMS), st.booleans()), max_size=12))
            if placement[room] == p
        ]
        for p in range(partitions)
    }
    rooms = frozenset(draw(st.sets(st.sampled_from(ROOMS), min_size=1)))
    # Where the subscriber resumes: nowhere, or any offset, even past where this feed has got to (a
    # client that was served by a process further on).
    resume = {p: draw(st.integers(-1, len(log[p]) + 1)) for p in range(partitions) if draw(st.booleans())}
    # The order the steps happen in: the feed publishing a partition's next records, the replay
    # reading its next records, the subscriber taking what is buffered.
    steps = draw(st.lists(st.sampled_from(["feed", "replay", "take"]), max_size=60))
    fed_before = {p: draw(st.integers(0, len(log[p]))) for p in range(partitions)}
    chunk = draw(st.integers(1, 4))
    return {
        "partitions": partitions, "placement": placement, "log": log, "rooms": rooms, "resume": resume,
        "steps": steps, "fed_before": fed_before, "chunk": chunk,
    }  # fmt: skip


class Feed:
    """The feed over a log: publishes each partition's next records, applied ones only."""

    def __init__(self, log: dict[int, list[Record]], fanout: Fanout, chunk: int) -> None:
        self.log, self.fanout, self.chunk = log, fanout, chunk
        fanout.begin(dict.fromkeys(log, 0))

    def step(self, partition: int, count: int | None = None) -> None:
        first = self.fanout.next[partition]
        records = self.log[partition][first : first + (count or self.chunk)]
        if not records:
            return
        changes = [change(r.room, partition, first + i) for i, r in enumerate(records) if r.applied]
        self.fanout.publish(changes, {partition: first + len(records) - 1})

    def done(self) -> bool:
        return all(self.fanout.next[p] >= len(records) for p, records in self.log.items())


class Replay:
    """The replay of a subscriber's rooms from its resume points up to where the feed took over."""

    def __init__(
        self,
        log: dict[int, list[Record]],
        rooms: frozenset[str],
        ranges: dict[int, tuple[int, int]],
        chunk: int,
    ) -> None:
        self.log, self.rooms, self.chunk = log, rooms, chunk
        self.cursors = {p: first for p, (first, _) in ranges.items()}
        self.ends = {p: until for p, (_, until) in ranges.items()}

    def step(self) -> list[Change]:
        for p, at in self.cursors.items():
            if at < self.ends[p]:
                upto = min(self.ends[p], at + self.chunk)
                self.cursors[p] = upto
                return [
                    change(self.log[p][o].room, p, o)
                    for o in range(at, upto)
                    if self.log[p][o].applied and self.log[p][o].room in self.rooms
                ]
        return []

    def done(self) -> bool:
        return all(at >= self.ends[p] for p, at in self.cursors.items())


@settings(max_examples=200, deadline=None)
@given(scenarios())
def test_a_subscriber_gets_every_applied_change_of_its_rooms_once_in_log_order(
    scenario: dict[str, Any],
) -> None:
    log, rooms, resume, placement = (
        scenario["log"],
        scenario["rooms"],
        scenario["resume"],
        scenario["placement"],
    )
    fanout = Fanout()
    feed = Feed(log, fanout, scenario["chunk"])
    for p, count in scenario["fed_before"].items():
        if count:
            feed.step(p, count)
    subscription = fanout.subscribe(rooms, capacity=10_000)
    start = dict(subscription.start)
    mine = {placement[room] for room in rooms}
    replay = Replay(log, rooms, replay_ranges(resume, start, mine), scenario["chunk"])
    handover = Handover(subscription, {p: o for p, o in resume.items() if p in mine})
    received: list[Change] = []
    turn = fed = 0
    steps = list(scenario["steps"])
    # Whatever the order of the drawn steps, then every remaining step until all is done.
    while steps or not (feed.done() and replay.done()):
        step = steps.pop(0) if steps else ("feed", "replay", "take")[turn % 3]
        turn += 1
        if step == "feed":
            fed += 1
            feed.step(fed % len(log))
        elif step == "replay":
            received += handover.admit(replay.step())
        elif replay.done():  # the live buffer is taken only once the replay is over
            received += handover.live()
    received += handover.live()

    expected = [
        (p, o)
        for p in sorted(mine)
        for o, record in enumerate(log[p])
        if record.applied and record.room in rooms and o > resume.get(p, start[p] - 1)
    ]
    got = [(c.position.partition, c.position.offset) for c in received]
    assert len(got) == len(set(got)), "a change delivered twice"
    for p in mine:
        offsets = [o for q, o in got if q == p]
        assert offsets == sorted(offsets), f"partition {p} out of order"
    assert sorted(got) == expected
    # The cursor resumes exactly after the last change of each partition delivered.
    for p, o in got:
        assert handover.last[p] >= o


def test_a_full_buffer_makes_the_subscription_lag_and_the_fanout_forget_it() -> None:
    fanout = Fanout()
    fanout.begin({0: 0})
    slow = fanout.subscribe({"r"}, capacity=2)
    fast = fanout.subscribe({"r"}, capacity=100)
    lagged = fanout.publish([change("r", 0, o) for o in range(3)], {0: 2})
    assert lagged == [slow]
    assert slow.lagging
    assert slow.take() == []
    assert len(fast.take()) == 3
    assert fanout.count == 1
    assert fanout.publish([change("r", 0, 3)], {0: 3}) == []
    assert [c.position.offset for c in fast.take()] == [3]
    fanout.unsubscribe(slow)  # again: nothing changes
    assert fanout.count == 1


def test_a_subscription_takes_only_its_rooms_from_where_the_feed_had_got() -> None:
    fanout = Fanout()
    fanout.begin({0: 5, 1: 7})
    fanout.publish([], {0: 9})
    subscription = fanout.subscribe({"a"}, capacity=4)
    assert subscription.start == {0: 10, 1: 7}
    fanout.publish([change("b", 0, 10), change("a", 0, 11)], {0: 11})
    assert [c.room_id for c in subscription.take()] == ["a"]


async def test_arrival_wakes_on_a_change_and_times_out_without_one() -> None:
    subscription = Subscription(frozenset({"a"}), {}, 2)
    assert not await subscription.arrival(0.01)
    subscription.offer(change("a", 0, 0))
    assert await subscription.arrival(1)


def test_replay_ranges_read_only_what_the_feed_had_not_published() -> None:
    assert replay_ranges({0: 3, 1: 9}, {0: 10, 1: 5, 2: 4}, [0, 1, 2]) == {0: (4, 10)}


def test_cursors_parse_one_position_or_several_on_distinct_partitions() -> None:
    assert parse_cursor("0-15", "f") == {0: 15}
    assert parse_cursor("0-15,3-42", "f") == {0: 15, 3: 42}
    for bad in ("", "0-1,0-2", "x", "0-1,", "٣-٣"):
        with pytest.raises(InvalidCommand):
            parse_cursor(bad, "f")
    handover = Handover(Subscription(frozenset(), {}, 1), {3: 42, 0: 15})
    assert handover.cursor() == "0-15,3-42"
