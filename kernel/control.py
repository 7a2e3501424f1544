"""The settings topic as merlin's control channel: what operators decided and what forwarders report.

The topic is compacted, so the newest value of a key is its state and a
tombstone deletes it. Every forwarder instance and the admin API read all of
it (assigned, not as group members) and keep it in memory. Keys:

- ``paused/<endpoint>``: the endpoint's flows stop on every forwarder; deleted to resume.
  ``by`` says who: an operator (absent), a rewind, or ``disabled`` by a forwarder
  for failing longer than the endpoint allows, with the ``reason``.
- ``blocked/<endpoint>/<room>``: a room held by an endpoint in ``block`` mode, with its
  head event, attempts and error; reported by the forwarder that holds it.
- ``unblock/<endpoint>/<room>``: an operator's ``retry`` or ``skip`` of that head event;
  deleted by the forwarder that carried it out.
- ``rates/<endpoint>/<instance>``: one forwarder instance's recent delivery and error rates.
- ``ping/<instance>``: a forwarder instance's ping to itself, which proves its subscription
  alive when it reads it back (``forwarder.subscription``); deleted when the instance stops.

Endpoint names and room ids never hold ``/``, so keys split unambiguously.

Anyone who may write the topic can write anything to it. A record whose value is
not a JSON object, or not of its kind's shape (``RECORD_SHAPES``, and those the
services add, as the endpoint definitions of ``webhooks.catalog``), is logged,
counted and skipped: the value it would replace stays in force, and no listener
hears of it. A listener that fails on a change is logged and counted too; the
others still hear it, and the reader reads on.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import traceback
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from prometheus_client import CollectorRegistry, Counter
from pydantic import BaseModel, ConfigDict, ValidationError

from domain.envelope import format_time
from kernel.consumer_thread import ConsumerThread
from kernel.errors import InfrastructureError
from kernel.logs import KAFKA_LOGGER
from kernel.producer import AsyncProducer
from kernel.records import arrived
from kernel.settings import ClientConfig, KafkaSettings

log = structlog.get_logger()

PAUSED, BLOCKED, UNBLOCK, RATES, PING = "paused", "blocked", "unblock", "rates", "ping"
DISABLED = "disabled"  # a pause's ``by``: a forwarder disabled the endpoint

Listener = Callable[[str, dict[str, Any] | None], None]
# Raises ValueError (pydantic's ValidationError is one) or TypeError for a value not of its kind's shape.
Check = Callable[[dict[str, Any]], object]
# Told of every record skipped: its kind (the key's first part) and why, in a few words.
Skipped = Callable[[str, str], None]


def counted_skips(registry: CollectorRegistry) -> Skipped:
    """A ``Skipped`` that counts in ``registry`` (``merlin_settings_records_skipped_total``)."""
    skipped = Counter(
        "merlin_settings_records_skipped",
        "Settings-topic records skipped: not of their kind's shape, or a change that could not be applied",
        ["kind", "reason"],
        registry=registry,
    )
    return lambda kind, reason: skipped.labels(kind, reason).inc()


class _Record(BaseModel):
    # Fields a newer version adds are kept; those this one reads must have their types.
    model_config = ConfigDict(extra="allow", strict=True)


class PausedRecord(_Record):
    at: str
    by: str | None = None
    reason: str | None = None
    instance: str | None = None


class BlockedRecord(_Record):
    event_id: str
    partition: int
    offset: int
    reason: str
    attempts: list[dict[str, Any]]
    since: str
    instance: str


class UnblockRecord(_Record):
    action: Literal["retry", "skip"]
    event_id: str
    at: str


class RatesRecord(_Record):
    delivered_per_s: float
    failed_per_s: float
    at: str


class PingRecord(_Record):
    run: str
    seq: int
    at: str


RECORD_SHAPES: dict[str, Check] = {
    PAUSED: PausedRecord.model_validate,
    BLOCKED: BlockedRecord.model_validate,
    UNBLOCK: UnblockRecord.model_validate,
    RATES: RatesRecord.model_validate,
    PING: PingRecord.model_validate,
}


def key(kind: str, *parts: str) -> str:
    """The control key of ``kind`` for ``parts`` (endpoint, then room or instance)."""
    return "/".join((kind, *parts))


def now() -> str:
    """The time as control records carry it (RFC 3339, UTC), as event envelopes do."""
    return format_time(datetime.now(UTC))


class ControlLog:
    """The whole settings topic, followed on its own thread; listeners hear every change on the loop."""

    def __init__(
        self,
        kafka: KafkaSettings,
        poll_timeout: float = 0.2,
        shapes: dict[str, Check] | None = None,
        skipped: Skipped | None = None,
        client: ClientConfig | None = None,
    ) -> None:
        """``client`` is added to the reader's librdkafka configuration (e.g. its statistics)."""
        self.topic = kafka.settings_topic
        self._shapes = {**RECORD_SHAPES, **(shapes or {})}
        self._skipped = skipped
        self.values: dict[str, dict[str, Any]] = {}
        self._config = kafka.client(
            {
                # Required by librdkafka, never used: the reader is assigned, it joins no group.
                "group.id": f"{self.topic}.reader",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 50,
                # The first read is whole once every partition reported its end.
                "enable.partition.eof": True,
                **(client or {}),
            }
        )
        self._poll_timeout = poll_timeout
        self._listeners: list[Listener] = []
        self._changed = asyncio.Event()
        self._thread = ConsumerThread("control-log")
        self._consumer: Consumer | None = None
        self._follower: asyncio.Task[None] | None = None
        # Where the reader got to, per partition: a renewed consumer reads on from there.
        self._next: dict[int, int] = {}
        self._renew = False

    def listen(self, listener: Listener) -> None:
        """Call ``listener(key, value or None)`` for every change read from now on."""
        self._listeners.append(listener)

    def under(self, kind: str, *parts: str) -> dict[str, dict[str, Any]]:
        """The values whose keys start with ``kind/parts…/``, by the rest of their key."""
        prefix = key(kind, *parts) + "/"
        return {k.removeprefix(prefix): v for k, v in self.values.items() if k.startswith(prefix)}

    async def start(self, timeout: float = 30.0) -> None:
        """Read the topic to its end (so the state is whole), then follow it in the background."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            waiting = await self._thread.call(self._open, timeout)
            while waiting:
                if loop.time() > deadline:
                    raise InfrastructureError(f"reading the settings topic {self.topic} timed out")
                changes, ended = await self._thread.call(self._poll)
                self.apply(changes)
                waiting -= ended
        except KafkaException as exc:
            raise InfrastructureError(f"reading the settings topic {self.topic}: {exc}") from exc
        self._follower = asyncio.create_task(self._follow(), name="control-log")

    def _open(self, timeout: float) -> set[int]:
        if self._consumer is not None:  # an earlier start that did not finish reads again from the start
            self._consumer.close()
            self._consumer = None
        consumer = Consumer({**self._config, "logger": KAFKA_LOGGER})
        try:
            metadata = consumer.list_topics(self.topic, timeout=timeout)
        except KafkaException:
            consumer.close()
            raise
        found = metadata.topics.get(self.topic)
        if found is None or found.error is not None:
            consumer.close()
            raise InfrastructureError(f"no settings topic {self.topic}: run `merlin topics create`")
        self._next = dict.fromkeys(found.partitions, OFFSET_BEGINNING)
        self._assign(consumer)
        self._consumer = consumer
        return set(self._next)

    def _assign(self, consumer: Consumer) -> None:
        consumer.assign([TopicPartition(self.topic, p, offset) for p, offset in self._next.items()])

    def renew(self) -> None:
        """Read on from where this reader got to over a new consumer, on new connections.

        For a subscription that stopped hearing while its connections look alive to
        librdkafka (which would wait out its socket timeout, a minute by default).
        """
        self._renew = True

    def _renewed(self) -> None:
        old = self._consumer
        consumer = Consumer({**self._config, "logger": KAFKA_LOGGER})
        self._assign(consumer)
        self._consumer = consumer
        if old is not None:  # closing may wait on the dead connections: not on this thread
            threading.Thread(target=old.close, name="control-log-close", daemon=True).start()

    def _poll(self) -> tuple[list[tuple[str, dict[str, Any] | None]], set[int]]:
        """The changes read, and the partitions whose end was reached."""
        if self._renew:
            self._renew = False
            self._renewed()
        assert self._consumer is not None
        changes: list[tuple[str, dict[str, Any] | None]] = []
        ended: set[int] = set()
        for message in arrived(self._consumer, 500, self._poll_timeout):
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    ended.add(message.partition() or 0)
                else:
                    log.warning("control_log_error", error=error.str())
                continue
            self._next[message.partition() or 0] = (message.offset() or 0) + 1
            change = self.decoded(message.key(), message.value())
            if change is not None:
                changes.append(change)
        return changes, ended

    def decoded(
        self, raw_key: bytes | None, raw_value: bytes | None
    ) -> tuple[str, dict[str, Any] | None] | None:
        """The change a record read makes (key, value or None to delete); None if it is skipped."""
        if not raw_key:
            return None
        name = raw_key.decode(errors="replace")
        if raw_value is None:
            return name, None
        value = self._readable(name, raw_value)
        return None if value is None else (name, value)

    def _readable(self, name: str, raw: bytes) -> dict[str, Any] | None:
        """The value ``raw`` holds if it has its kind's shape; else None, and it is reported skipped."""
        kind = self._kind(name)
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self._skip(name, kind, "not JSON")
            return None
        if not isinstance(value, dict):
            self._skip(name, kind, "not a JSON object")
            return None
        check = self._shapes.get(kind)
        try:
            if check is not None:
                check(value)
        except (ValueError, TypeError) as exc:
            # The error names the fields that are wrong, never their values: a record may hold secrets.
            fields = (
                sorted({".".join(map(str, e["loc"])) for e in exc.errors()})
                if isinstance(exc, ValidationError)
                else []
            )
            self._skip(name, kind, f"not a {kind} record", fields)
            return None
        return value

    def _kind(self, name: str) -> str:
        """The kind of the key ``name``; ``other`` for kinds no one reads (a bounded set of labels)."""
        kind = name.partition("/")[0]
        return kind if kind in self._shapes else "other"

    def _skip(self, name: str, kind: str, reason: str, fields: list[str] | None = None) -> None:
        log.warning("control_record_skipped", key=name, reason=reason, fields=fields or None)
        if self._skipped is not None:
            self._skipped(kind, reason)

    def apply(self, changes: list[tuple[str, dict[str, Any] | None]]) -> None:
        """Hold ``changes`` (as ``decoded`` gives them) and tell every listener of each, in order."""
        for name, value in changes:
            if value is None:
                self.values.pop(name, None)
            else:
                self.values[name] = value
            for listener in self._listeners:
                try:
                    listener(name, value)
                except Exception as exc:  # one change cannot take the reader, or the worker, down
                    # Where, not the message nor a traceback: either may quote the record's secrets.
                    last = traceback.extract_tb(exc.__traceback__)[-1]
                    log.error(
                        "control_change_unapplied", key=name, error=type(exc).__name__,
                        at=f"{last.filename}:{last.lineno}",
                    )  # fmt: skip
                    if self._skipped is not None:
                        self._skipped(self._kind(name), "not applied")
        if changes:
            self._changed.set()
            self._changed = asyncio.Event()

    async def gone(self, name: str, timeout: float) -> bool:
        """Wait up to ``timeout`` s until ``name`` is deleted; whether it was."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while name in self.values:
            try:
                await asyncio.wait_for(self._changed.wait(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                return False
        return True

    async def _follow(self) -> None:
        while True:
            try:
                changes, _ended = await self._thread.call(self._poll)
            except KafkaException as exc:  # librdkafka reconnects by itself: keep polling
                log.warning("control_log_error", error=str(exc))
                await asyncio.sleep(self._poll_timeout)
                continue
            self.apply(changes)

    async def close(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        if self._consumer is not None:
            await self._thread.call(self._consumer.close)
            self._consumer = None
        self._thread.stop()


class ControlWriter:
    """Writes control records; each call returns once the broker has the record.

    What it writes is also written through to ``log`` at once, so its writer sees
    it before the record is read back (which brings the same value).
    """

    def __init__(self, producer: AsyncProducer, log: ControlLog) -> None:
        self.producer = producer
        self.log = log

    def put(self, name: str, value: dict[str, Any]) -> Coroutine[Any, Any, object]:
        """Set ``name`` here at once; await the result for the broker's acknowledgement."""
        self.log.values[name] = value
        return self.producer.send(self.log.topic, orjson.dumps(value), key=name.encode())

    def delete(self, name: str) -> Coroutine[Any, Any, object]:
        """Delete ``name`` here at once; await the result for the broker's acknowledgement."""
        self.log.values.pop(name, None)
        return self.producer.send(self.log.topic, None, key=name.encode())

    async def close(self) -> None:
        """Close the producer, for a writer that has one of its own; what it could not send is dropped."""
        await self.producer.close(timeout=0)
