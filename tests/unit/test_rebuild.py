"""A rebuild's arithmetic (plan, pace, ETA) and its run over fakes: caught up, following, stopped."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest

from domain import MessageCreated
from forwarder.rebuild import Plan, Progress, Result, Speedometer, Target, project_log
from forwarder.settings import ForwarderSettings
from forwarder.supervisor import BackoffPolicy
from kernel.errors import InfrastructureError
from merlin.rebuild_command import ProgressReport, bar, describe, duration
from read_store.settings import ReadStoreSettings
from tests.unit.fakes import FakeSource, MemoryStore, batch, consumed, poison, until

T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)


def created(n: int, room: str, body: str | None = None) -> MessageCreated:
    return MessageCreated(UUID(int=n), room, UUID(int=n), "ann", body or f"message {n}", T0)


# -- the plan ---------------------------------------------------------------------------------------


def test_a_plan_starts_after_the_stores_positions_and_ends_at_the_logs_end() -> None:
    plan = Plan.of("t", {0: (0, 10), 1: (0, 5), 2: (0, 0)}, {0: 3})
    assert plan.starts == {0: 4, 1: 0, 2: 0}
    assert plan.ends == {0: 10, 1: 5, 2: 0}
    assert plan.total == 6 + 5
    assert plan.done({0: 3}) == (0, 0)
    assert plan.done({0: 6, 1: 4}) == (3 + 5, 0)
    # Past the ends (the log grew meanwhile): counted apart, never above the total.
    assert plan.done({0: 11, 1: 4, 2: 1}) == (6 + 5, 2 + 2)


def test_a_plan_is_refused_when_retention_deleted_records_the_store_still_needs() -> None:
    assert Plan.of("t", {0: (7, 10)}, {0: 6}).starts == {0: 7}  # deleted, but already applied
    with pytest.raises(
        InfrastructureError, match=r"partition 0 of t now begins at offset 7.* miss 3 records"
    ):
        Plan.of("t", {0: (7, 10)}, {0: 3})


def test_a_plan_is_refused_when_the_store_is_ahead_of_the_log() -> None:
    with pytest.raises(InfrastructureError, match="not a store of this log"):
        Plan.of("t", {0: (0, 10)}, {0: 10})


# -- pace and ETA --------------------------------------------------------------------------------------


def test_the_pace_is_that_of_the_last_window_not_the_average_since_the_start() -> None:
    speed = Speedometer(window=10)
    assert speed.rate(0.0, 0) == 0.0
    assert speed.rate(2.0, 2_000) == 1_000.0
    assert speed.rate(10.0, 10_000) == 1_000.0
    # Slower from t=10 on: after a whole window at 100/s the pace is 100/s, whatever came before.
    assert speed.rate(15.0, 10_500) == pytest.approx((10_500 - 2_000) / 13)
    assert speed.rate(20.0, 11_000) == pytest.approx(100.0)
    assert speed.rate(30.0, 12_000) == pytest.approx(100.0)
    assert speed.rate(30.0, 12_000) == pytest.approx(100.0)  # no time passed: the same pace, no division by 0


def test_eta_is_what_remains_at_the_current_pace() -> None:
    assert Progress(done=2_500, total=10_000, seconds=5, rate=500).eta == 15.0
    assert Progress(done=0, total=10_000, seconds=0, rate=0).eta is None
    done = Progress(done=10_000, total=10_000, seconds=20, rate=0)
    assert (done.eta, done.caught_up, done.fraction) == (0.0, True, 1.0)
    empty = Progress(done=0, total=0, seconds=0, rate=0)
    assert (empty.eta, empty.caught_up, empty.fraction) == (0.0, True, 1.0)


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(None, "--:--:--"), (float("inf"), "--:--:--"), (0, "0:00:00"), (0.2, "0:00:01"), (61, "0:01:01"),
     (3_600 * 5 + 7, "5:00:07")],
)  # fmt: skip
def test_durations_read_as_hours_minutes_seconds(seconds: float | None, shown: str) -> None:
    assert duration(seconds) == shown


def test_a_progress_line_says_done_total_percent_pace_and_eta() -> None:
    progress = Progress(done=12_500, total=50_000, seconds=1, rate=12_345.6)
    assert describe(progress) == "12,500/50,000 events (25.0%), 12,346 events/s, ETA 0:00:04"
    assert bar(progress, 80) == f"[{'#' * 5}{'.' * 14}] {describe(progress)}"
    assert len(bar(progress, 80)) == 80
    following = Progress(done=50_000, total=50_000, seconds=9, rate=40, beyond=120)
    assert describe(following) == "caught up (50,000 events), following: 120 more, 40 events/s"


def test_without_a_terminal_progress_is_a_plain_line_every_few_seconds() -> None:
    stream = io.StringIO()
    report = ProgressReport(stream, every=3600)
    report(Progress(1, 4, 0, 1))
    report(Progress(2, 4, 0, 1))  # too soon
    report(Progress(4, 4, 0, 1), final=True)
    assert stream.getvalue().splitlines() == [
        "rebuild: 1/4 events (25.0%), 1 events/s, ETA 0:00:03",
        "rebuild: 4/4 events (100.0%), 1 events/s, ETA 0:00:00",
    ]


# -- the target ----------------------------------------------------------------------------------------


def test_a_target_never_shows_its_password_and_knows_the_services_store() -> None:
    target = Target("postgresql://merlin:s3cret@db:5432/merlin", "rebuilt")
    assert target.shown() == "postgresql://merlin:***@db:5432/merlin"
    live = ReadStoreSettings(url="postgresql+asyncpg://merlin:s3cret@db:5432/merlin", db_schema="rebuilt")
    assert target.is_store(live)
    assert not target.is_store(ReadStoreSettings(url=live.url))
    with pytest.raises(InfrastructureError) as refused:
        Target("nonsense:s3cret")
    assert "s3cret" not in str(refused.value)
    with pytest.raises(InfrastructureError, match="--schema is for PostgreSQL"):
        Target("sqlite:///rebuilt.db", "rebuilt")


# -- the run, over fakes ---------------------------------------------------------------------------------


def rebuilding(
    source: FakeSource,
    store: MemoryStore,
    plan: Plan,
    stop: asyncio.Event,
    *,
    follow: bool = False,
    **hooks: Callable[[Progress], None],
) -> Coroutine[Any, Any, Result]:
    """The rebuild's run over fakes; a stage that crashes fails the test rather than restarting."""
    settings = ForwarderSettings(batch_max=100, poll_timeout=0.01)
    return project_log(
        source, store, plan, settings, follow=follow, stop=stop, policy=BackoffPolicy(max_restarts=0), **hooks
    )  # fmt: skip


async def test_a_rebuild_stops_once_caught_up_and_dead_letters_nothing() -> None:
    source, store = FakeSource(), MemoryStore(refuses=frozenset({"bad"}))
    a, refused, b, c = created(1, "r1"), created(2, "r1", "bad"), created(3, "r1"), created(4, "r2")
    source.push(
        batch(consumed(0, 0, a), consumed(0, 1, refused), poison(0, 2, b"not json")),
        batch(consumed(0, 3, b), consumed(1, 0, c)),
    )
    plan = Plan.of("t", {0: (0, 4), 1: (0, 1)}, {})
    heard: list[Progress] = []
    result = await asyncio.wait_for(
        rebuilding(source, store, plan, asyncio.Event(), caught_up=heard.append), 10
    )
    assert result.caught_up
    assert (result.events, result.refused, result.malformed) == (5, 1, 1)
    assert result.positions == {0: 3, 1: 0}
    assert [(p.done, p.total) for p in heard] == [(5, 5)]
    assert source.closed
    assert {m.message.body for m in store.snapshot.messages.values()} == {
        "message 1",
        "message 3",
        "message 4",
    }
    # The refused record is recorded as rejected in the new store, as the live projection did.
    assert store.snapshot.seen_event_ids[refused.event_id] is False


async def test_a_rebuild_that_follows_goes_on_past_the_end_until_stopped() -> None:
    source, store, stop = FakeSource(), MemoryStore(), asyncio.Event()
    source.push(batch(consumed(0, 0, created(1, "r1"))))
    plan = Plan.of("t", {0: (0, 1)}, {})
    caught: list[Progress] = []
    running = asyncio.create_task(rebuilding(source, store, plan, stop, follow=True, caught_up=caught.append))
    await until(lambda: bool(caught), "caught up")
    source.push(batch(consumed(0, 1, created(2, "r1")), consumed(0, 2, created(3, "r1"))))
    await until(lambda: store.snapshot.positions.get(0) == 2, "the later records applied")
    assert not running.done()
    stop.set()
    result = await asyncio.wait_for(running, 10)
    assert (result.caught_up, result.events, result.positions) == (True, 3, {0: 2})
    assert source.closed


async def test_a_rebuild_stopped_before_catching_up_says_so_and_keeps_what_landed() -> None:
    source, store, stop = FakeSource(), MemoryStore(), asyncio.Event()
    source.push(batch(consumed(0, 0, created(1, "r1"))))
    plan = Plan.of("t", {0: (0, 5)}, {})
    heard: list[Progress] = []
    running = asyncio.create_task(rebuilding(source, store, plan, stop, report=heard.append))
    await until(lambda: any(p.done == 1 for p in heard), "the first record applied")
    stop.set()
    result = await asyncio.wait_for(running, 10)
    assert (result.caught_up, result.events, result.positions) == (False, 1, {0: 0})
