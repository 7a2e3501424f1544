"""What each delivery tells, and the figures and rows a run of the live scenario makes of them.

A message's body starts with the Unix time its POST was sent (``stamp``), so a subscriber in
another process knows the message's latency when it arrives: sender and subscribers share the
machine's clock. Each room's messages carry a ``seq`` that grows; a subscriber that sees one not
above its last saw a duplicate or an inversion (``repeated``), which is not counted delivered.
Before the measured load each room gets one priming message: a subscriber that received it is
known to be subscribed, whatever the server does between answering the request and subscribing.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from bench.harness import Row
from bench.live.sse import Event
from bench.pipeline import percentile

BODY_CHARACTERS: Final = 200  # as the other scenarios' messages
PRIME: Final = "prime"
# merlin's event types on a live stream (the contract's ``event:`` names).
MESSAGE_EVENTS: Final = frozenset({"message.created", "message.updated"})


def stamp(sent: float, characters: int = BODY_CHARACTERS) -> str:
    """A message body of ``characters`` characters that starts with its send time."""
    head = f"{sent:.6f} "
    return head + "x" * max(0, characters - len(head))


def prime_body(sent: float) -> str:
    return f"{PRIME} {sent:.6f}"


def sent_at(body: str) -> float | None:
    """The send time a body starts with; None for a priming message. ValueError for anything else."""
    head = body.split(" ", 1)[0]
    if head == PRIME:
        return None
    value = float(head)
    if not math.isfinite(value):
        raise ValueError(f"no send time in {body[:40]!r}")
    return value


@dataclass(frozen=True, slots=True)
class Message:
    room: str
    seq: int
    body: str


class Connected:
    """Centrifugo's first push on a connection: its subscriptions are in place."""

    __slots__ = ()


CONNECTED: Final = Connected()


def _message(fields: Mapping[str, Any]) -> Message:
    return Message(str(fields["room_id"]), int(fields["seq"]), str(fields["body"]))


def merlin_message(event: Event) -> Message | None:
    """A message of merlin's live stream: the event's data is the message (heartbeats are comments)."""
    if event.event not in MESSAGE_EVENTS:
        return None
    return _message(orjson.loads(event.data))


def centrifugo_message(event: Event) -> Message | Connected | None:
    """A publication of Centrifugo's unidirectional stream, its connect reply, or a ping (``{}``)."""
    push = orjson.loads(event.data)
    if "connect" in push:
        return CONNECTED
    publication = push.get("pub")
    if publication is None:
        return None
    return _message(publication["data"])


class Subscriber:
    """One stream's state: its room, the last ``seq`` it saw, whether its priming message came."""

    __slots__ = ("last_seq", "primed", "room")

    def __init__(self, room: str) -> None:
        self.room = room
        self.last_seq = -1
        self.primed = False


@dataclass
class Tally:
    """Deliveries seen by one subscribers' process."""

    latencies: array[float] = field(default_factory=lambda: array("d"))
    delivered: int = 0
    primed: int = 0
    repeated: int = 0
    first_at: float = math.inf
    last_at: float = 0.0

    def received(self, subscriber: Subscriber, message: Message, now: float) -> None:
        if message.seq <= subscriber.last_seq:
            self.repeated += 1
            return
        subscriber.last_seq = message.seq
        sent = sent_at(message.body)
        if sent is None:
            if not subscriber.primed:
                subscriber.primed = True
                self.primed += 1
            return
        self.delivered += 1
        self.latencies.append(now - sent)
        self.first_at = min(self.first_at, now)
        self.last_at = max(self.last_at, now)


def subscriber_rooms(subscribers: int, rooms: int, prefix: str = "room") -> list[str]:
    """The room of each subscriber: round-robin, so every room has as many (within one)."""
    return [f"{prefix}-{n % rooms}" for n in range(subscribers)]


def expected_deliveries(accepted: Mapping[str, int], rooms: Iterable[str]) -> int:
    """What every subscriber should receive: each message accepted in its room, once per subscriber there."""
    return sum(accepted.get(room, 0) for room in rooms)


def split(items: list[str], share: int) -> list[list[str]]:
    """``items`` in consecutive parts of at most ``share``."""
    return [items[start : start + share] for start in range(0, len(items), share)]


@dataclass(frozen=True)
class Side:
    """One server's measurement: what arrived, over how long, for how much of the server's CPU."""

    subscribers: int
    expected: int
    delivered: int
    repeated: int
    seconds: float  # the first message sent → the last delivery received
    server_cpu_s: float
    server_rss_mb: float  # with every subscriber connected, after the load
    idle_rss_mb: float  # before any subscriber connected
    latencies: list[float]
    offered_per_s: float  # deliveries the sender's rate asks for
    extra: dict[str, float] = field(default_factory=dict)

    def figures(self) -> dict[str, float]:
        """Its figures, by name: each run's, of which a scenario reports the median."""
        latencies = self.latencies or [math.nan]
        return {
            "deliveries_per_s": self.delivered / self.seconds,
            "per_core": self.delivered / self.server_cpu_s if self.server_cpu_s > 0 else math.nan,
            "cores": self.server_cpu_s / self.seconds,
            "p50_ms": percentile(latencies, 0.5) * 1000,
            "p99_ms": percentile(latencies, 0.99) * 1000,
            "missing": float(self.expected - self.delivered),
            "repeated": float(self.repeated),
            "rss_mb": self.server_rss_mb,
            "mb_per_1000": (self.server_rss_mb - self.idle_rss_mb) * 1000 / self.subscribers,
            "offered_per_s": self.offered_per_s,
            **self.extra,
        }


def comparison_measure(subscribers: int, rooms: int, n: int) -> str:
    """A comparison row's measure; ``N = n`` is merlin's read API workers, and Centrifugo's GOMAXPROCS."""
    return f"{subscribers:,} subscribers over {rooms} rooms: deliveries per CPU-second, N = {n}"


PER_CORE: Final = "deliveries/s per core"


def comparison_row(
    scenario: str, peer: str, subscribers: int, rooms: int, n: int,
    merlin: Mapping[str, float], other: Mapping[str, float],
) -> Row:  # fmt: skip
    """merlin's deliveries per second per core of its read API beside the peer's, and both p99s."""
    extra = {f"{side}_{key}": value for side, figures in (("merlin", merlin), ("peer", other))
             for key, value in figures.items()}  # fmt: skip
    extra["p99_ratio"] = merlin["p99_ms"] / other["p99_ms"] if other["p99_ms"] else math.nan
    return Row(
        scenario, comparison_measure(subscribers, rooms, n), PER_CORE, merlin["per_core"],
        other["per_core"], f"{peer}, GOMAXPROCS={n}", merlin["p50_ms"], merlin["p99_ms"], extra, peer=peer,
    )  # fmt: skip


def idle_rows(
    scenario: str, subscribers: int, events: int, alone: Mapping[str, float], beside: Mapping[str, float]
) -> list[Row]:
    """The write path's peak and the projection's rate with ``subscribers`` idle streams open, beside none."""
    without = "the same without subscribers"
    return [
        Row(scenario, f"POST /messages beside {subscribers:,} idle subscribers", "req/s",
            beside["requests_per_second"], alone["requests_per_second"], without,
            beside["p50_ms"], beside["p99_ms"],
            {"alone_p50_ms": alone["p50_ms"], "alone_p99_ms": alone["p99_ms"]}),
        Row(scenario, f"{events:,} events projected beside {subscribers:,} idle subscribers", "events/s",
            beside["events_per_second"], alone["events_per_second"], without),
    ]  # fmt: skip
