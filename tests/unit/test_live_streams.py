"""A live stream's registration with the feed, seen without a broker: the feed is a stand-in."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry

from kernel.auth import READ, Caller
from kernel.position import Position
from kernel.settings import KafkaSettings
from read_api.handover import Change, Fanout, Subscription
from read_api.live import LiveRooms
from read_api.settings import ReadApiSettings
from read_store.reader import ReadStore


class _Feed:
    """The feed's face a stream uses, with the fan-out itself: who subscribed is the real book."""

    partitions = 1

    def __init__(self) -> None:
        self.fanout = Fanout()

    async def started(self, _timeout: float) -> bool:
        return True

    def subscribe(self, rooms: frozenset[str], capacity: int) -> Subscription:
        return self.fanout.subscribe(rooms, capacity)

    def unsubscribe(self, subscription: Subscription) -> None:
        self.fanout.unsubscribe(subscription)

    async def replay(
        self, _rooms: frozenset[str], _ranges: Mapping[int, tuple[int, int]]
    ) -> AsyncIterator[list[Change]]:
        return
        yield []


def _no_store() -> ReadStore:
    raise AssertionError("no store is asked")


async def _any(_position: Position, _room: str | None) -> None:
    return None


async def test_a_stream_is_registered_before_its_response_sends_anything_and_unregistered_after() -> None:
    live = LiveRooms(ReadApiSettings(), KafkaSettings(), _no_store, CollectorRegistry())
    feed = _Feed()
    live.feed = feed  # type: ignore[assignment]
    caller = Caller("alice", frozenset({READ}), frozenset({"*"}))
    response = await live.open(caller, ["lobby"], None, "after_position", _any)
    # A client that sees the stream open and then reads the room must miss no change in between:
    # the subscription exists before the response has sent its first byte.
    assert feed.fanout.count == 1
    assert live.streams == 1
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/v1/rooms/lobby/live", "headers": []}
    await response(scope, receive, send)
    assert feed.fanout.count == 0
    assert live.streams == 0
