"""Rebuild a read store from the log: a fresh projection into another store, delivering nothing.

The target (a new SQLite file, or a new PostgreSQL schema) is migrated, then the
whole events topic is projected into it by a flow in the live projection's own
role (``forwarder.projecting``), so its rules and its isolation of records the
store refuses are the same. What differs is where the records come from and
where dead letters go:

- the source joins no consumer group: every partition is assigned by hand, from
  the target's own positions, so the rebuild takes no partition from a live
  forwarder and moves no group's offsets; endpoints, which have groups of their
  own, are never touched, and nothing is delivered again;
- dead letters are dropped (see ``_DroppedDeadLetters``), and records that are
  no event are passed by (``_SkippedPoison``).

It stops once every partition has been applied up to the log's end as it was
when the rebuild began ("caught up"), or with ``follow`` it keeps following the
log until stopped. The target's positions are written with each batch, so a
rebuild that was stopped half-way continues where it was when run again.
Switching over is a restart of the services on the new store (``merlin.rebuild_command.switch_over``
says how).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import asyncpg
from confluent_kafka import KafkaException
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from domain.errors import MerlinError
from forwarder.consumer import AssignedConsumer, log_bounds, log_reader_config
from forwarder.intake import Intake
from forwarder.ledger import Ledger
from forwarder.metrics import ForwarderMetrics
from forwarder.projecting import Projecting
from forwarder.settings import ForwarderSettings
from forwarder.source import Consumed, ProjectionWriter, Source
from forwarder.supervisor import BackoffPolicy
from kernel.errors import InfrastructureError
from kernel.records import Header
from kernel.settings import KafkaSettings
from read_store.dialect import dialect_of
from read_store.engines import create_engine, normalise_url, shown_url
from read_store.migrate import upgrade
from read_store.projection import Changes, Record
from read_store.settings import ReadStoreSettings
from read_store.writer import ProjectionStore
from webhooks.dead_letters import DeadLetters, header_map

_TICK = 0.5  # how often progress is looked at when no batch lands meanwhile (s)


@dataclass(frozen=True)
class Target:
    """The store to rebuild: a URL, and for PostgreSQL optionally a schema."""

    url: str
    schema: str | None = None

    def __post_init__(self) -> None:
        try:
            dialect = dialect_of(self.url)
        except ArgumentError:
            # SQLAlchemy's message repeats the URL, password included.
            raise InfrastructureError("--to is not a database URL (sqlite:///… or postgresql://…)") from None
        except ValueError as exc:
            raise InfrastructureError(str(exc)) from None
        if self.schema and not dialect.has_schemas:
            raise InfrastructureError("--schema is for PostgreSQL: a SQLite read store is its own file")

    def shown(self) -> str:
        """The URL with its password masked, fit to print."""
        return shown_url(self.url)

    def __str__(self) -> str:
        return f"{self.shown()} (schema {self.schema})" if self.schema else self.shown()

    def is_store(self, settings: ReadStoreSettings) -> bool:
        """Whether this is the store that ``settings`` (the services' read store) names."""
        return (normalise_url(self.url), self.schema or None) == (
            normalise_url(settings.url),
            settings.db_schema or None,
        )


# -- what is to do --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Per partition, the first offset to project and the log's end when the rebuild began."""

    starts: dict[int, int]
    ends: dict[int, int]

    @classmethod
    def of(cls, topic: str, bounds: Mapping[int, tuple[int, int]], positions: Mapping[int, int]) -> Plan:
        """The plan for a store at ``positions`` (last applied offsets) over a log of ``bounds``.

        Refused when the log no longer holds records the store still needs (retention deleted
        them: the rebuilt store would silently lack them), or when the store is ahead of the log
        (a store of another topic, or of a topic since recreated).
        """
        starts: dict[int, int] = {}
        for partition, (first, end) in sorted(bounds.items()):
            start = positions.get(partition, -1) + 1
            if start < first:
                raise InfrastructureError(
                    f"partition {partition} of {topic} now begins at offset {first} (older records were"
                    f" deleted): the store needs it from offset {start}, so a rebuild would miss"
                    f" {first - start} records"
                )
            if start > end:
                raise InfrastructureError(
                    f"the store has applied partition {partition} of {topic} up to offset {start - 1},"
                    f" but the log ends at {end - 1}: it is not a store of this log"
                )
            starts[partition] = start
        return cls(starts, {partition: end for partition, (_, end) in bounds.items()})

    @property
    def total(self) -> int:
        """Records to project."""
        return sum(end - self.starts[partition] for partition, end in self.ends.items())

    def done(self, applied: Mapping[int, int]) -> tuple[int, int]:
        """Records done up to the ends, and past them, given the last offset ``applied`` per partition."""
        within = beyond = 0
        for partition, end in self.ends.items():
            reached = applied.get(partition, -1) + 1
            within += max(0, min(reached, end) - self.starts[partition])
            beyond += max(0, reached - max(end, self.starts[partition]))
        return within, beyond


# -- progress ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Progress:
    """How far a rebuild is: events done of the total, past the total (following), and the pace.

    An "event" here is a record of the events topic; the few that are no event count too.
    """

    done: int
    total: int
    seconds: float
    rate: float  # events/s, at the current pace
    beyond: int = 0  # events past the log's end as it was at the start

    @property
    def remaining(self) -> int:
        return max(0, self.total - self.done)

    @property
    def caught_up(self) -> bool:
        return self.remaining == 0

    @property
    def fraction(self) -> float:
        return 1.0 if self.total <= 0 else min(1.0, self.done / self.total)

    @property
    def eta(self) -> float | None:
        """Seconds left at the current pace; None while there is no pace to go by."""
        if self.remaining == 0:
            return 0.0
        return self.remaining / self.rate if self.rate > 0 else None


class Speedometer:
    """Events per second over the last ``window`` seconds.

    The pace of the last seconds, not the average since the start: a rebuild slows down as
    the store grows, and an ETA from its early pace would promise too much.
    """

    def __init__(self, window: float = 10.0) -> None:
        self.window = window
        self._samples: deque[tuple[float, int]] = deque()

    def rate(self, now: float, count: int) -> float:
        """The pace up to ``now``, when ``count`` events are done in all."""
        self._samples.append((now, count))
        # Keep one sample at or before the window's start, so the window is always covered.
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window:
            self._samples.popleft()
        then, before = self._samples[0]
        return (count - before) / (now - then) if now > then else 0.0


# -- the projection -------------------------------------------------------------------------------------


class _DroppedDeadLetters:
    """Where the rebuild's dead letters go: nowhere, only counted.

    The live projection already dead-lettered every record that is no event (stage ``decode``)
    or that its store refused (stage ``store``) when it first met it; sending them again would
    show each twice to whoever reads the dead-letter topic, and replay them twice. A record the
    new store refuses that the old one kept is still recorded in the new store, as ``rejected``
    (``store_refused``) with the store's reason, logged, and counted in the rebuild's summary.
    """

    def __init__(self) -> None:
        self.dropped: Counter[str] = Counter()

    async def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Sequence[tuple[str, Header]] = (),
    ) -> tuple[int, int]:
        self.dropped[header_map(headers).get("merlin.dlq.stage", "")] += 1
        return -1, -1


class _SkippedPoison:
    """The rebuild's records that are no event: passed by, counted by ``_Progressing``.

    The live projection dead-lettered each of them (stage ``decode``) when it first met it.
    """

    async def met(self, poison: list[tuple[Consumed, str]]) -> None:
        pass


class _Progressing:
    """The target store, noting the last offset applied per partition once each batch is committed."""

    def __init__(self, store: ProjectionWriter, applied: Mapping[int, int]) -> None:
        self.store = store
        self.applied = dict(applied)
        self.malformed = 0  # records that are no event: skipped (the live projection dead-lettered them)
        self.landed = asyncio.Event()

    async def apply(
        self, records: Sequence[Record], refused: Mapping[tuple[int, int], str] | None = None
    ) -> Changes:
        fresh_poison = sum(
            1 for r in records if r.event is None and r.offset > self.applied.get(r.partition, -1)
        )
        changes = await self.store.apply(records, refused)
        self.malformed += fresh_poison
        for partition, offset in changes.positions.items():
            self.applied[partition] = max(offset, self.applied.get(partition, -1))
        self.landed.set()
        return changes

    async def ping(self) -> None:
        await self.store.ping()


@dataclass
class Result:
    """What a rebuild did."""

    events: int = 0  # records projected by this run (a resumed rebuild counts only its own)
    seconds: float = 0.0
    caught_up: bool = False
    refused: int = 0  # records the new store refused: recorded as rejected (store_refused)
    malformed: int = 0  # records that are no event: skipped
    positions: dict[int, int] = field(default_factory=dict)  # partition -> last applied offset

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


async def project_log(
    source: Source,
    store: ProjectionWriter,
    plan: Plan,
    settings: ForwarderSettings,
    *,
    follow: bool,
    stop: asyncio.Event,
    report: Callable[[Progress], None] = lambda _progress: None,
    caught_up: Callable[[Progress], None] = lambda _progress: None,
    policy: BackoffPolicy | None = None,
) -> Result:
    """Project ``plan`` from ``source`` into ``store`` until caught up (or, with ``follow``, until ``stop``).

    ``report`` hears how far it is after every batch that lands and at every tick, but for the
    moment the store has applied every partition up to the plan's ends: ``caught_up`` hears that,
    once.
    """
    tracked = _Progressing(store, {partition: start - 1 for partition, start in plan.starts.items()})
    letters = _DroppedDeadLetters()
    ledger, metrics = Ledger(), ForwarderMetrics()
    projecting = Projecting(
        "rebuild", tracked, DeadLetters(letters, "dropped"), _SkippedPoison(), ledger, metrics
    )
    flow = Intake(
        "rebuild", settings, source, projecting, ledger, metrics, policy or settings.restart_policy()
    )
    flow_stop = asyncio.Event()
    began = time.monotonic()
    speed = Speedometer()
    speed.rate(began, 0)
    result = Result()

    def progress() -> Progress:
        done, beyond = plan.done(tracked.applied)
        now = time.monotonic()
        return Progress(done, plan.total, now - began, speed.rate(now, done + beyond), beyond)

    running = asyncio.create_task(flow.run(flow_stop), name="rebuild-flow")
    stopping = asyncio.create_task(stop.wait())
    try:
        while True:
            now = progress()
            if now.caught_up and not result.caught_up:
                result.caught_up = True
                result.seconds, result.events = now.seconds, now.done + now.beyond
                caught_up(now)
            else:
                report(now)
            if running.done() or stop.is_set() or (result.caught_up and not follow):
                break
            landed = asyncio.create_task(tracked.landed.wait())
            await asyncio.wait(
                {running, stopping, landed}, timeout=_TICK, return_when=asyncio.FIRST_COMPLETED
            )
            landed.cancel()
            tracked.landed.clear()
    finally:
        flow_stop.set()
        stopping.cancel()
        await running  # the flow lets the batches it has consumed land first (bounded)
    last = progress()
    if follow or not result.caught_up:  # else the figures stand as they were when it caught up
        result.seconds, result.events = last.seconds, last.done + last.beyond
    result.refused = letters.dropped["store"]
    result.malformed = tracked.malformed
    result.positions = {p: o for p, o in tracked.applied.items() if o >= 0}
    return result


async def rebuild(
    target: Target,
    kafka: KafkaSettings,
    settings: ForwarderSettings,
    *,
    follow: bool = False,
    stop: asyncio.Event | None = None,
    report: Callable[[Progress], None] = lambda _progress: None,
    caught_up: Callable[[Progress], None] = lambda _progress: None,
    planned: Callable[[Plan], None] = lambda _plan: None,
) -> Result:
    """Migrate ``target`` and project the events topic into it; see ``project_log``."""
    topic = kafka.events_topic
    try:
        await upgrade(target.url, target.schema, create_schema=True)
    except (OSError, SQLAlchemyError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise InfrastructureError(f"the read store at {target.shown()}: {_first_line(exc)}") from exc
    engine = create_engine(target.url, writer=True, schema=target.schema)
    store = ProjectionStore(engine, topic)
    try:
        positions = await store.load_positions()
        config = log_reader_config(kafka, f"{settings.group_id}.rebuild", settings.batch_max)
        plan = Plan.of(topic, await asyncio.to_thread(log_bounds, config, topic), positions)
        planned(plan)
        source = AssignedConsumer(config, topic, plan.starts)
        try:
            return await project_log(
                source, store, plan, settings, follow=follow, stop=stop or asyncio.Event(), report=report,
                caught_up=caught_up,
            )  # fmt: skip
        except Exception as failed:
            cause = _first_leaf(failed)
            if isinstance(cause, MerlinError):
                raise cause from failed
            if isinstance(cause, KafkaException | SQLAlchemyError | OSError):
                raise InfrastructureError(
                    f"the rebuild stopped: {_first_line(cause)}; run it again to continue from where it is"
                ) from failed
            raise
    finally:
        await store.close()
        await engine.dispose()


def _first_leaf(exc: BaseException) -> BaseException:
    # The flow's stages run in a task group: what failed is inside its exception group.
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _first_line(exc: BaseException) -> str:
    # SQLAlchemy appends the SQL and a link on lines of their own; the first line says what happened.
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
