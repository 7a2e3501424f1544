"""The backoff supervisor, driven by a fake clock: delays, reset, escalation, hooks."""

from __future__ import annotations

import random

import pytest

from forwarder.supervisor import BackoffPolicy, BackoffSupervisor, Hooks, SupervisorGaveUp


class FakeClock:
    def __init__(self) -> None:
        self.time = 0.0
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.time += seconds


class Child:
    """Crashes ``crashes`` times (running ``runtime`` fake seconds each), then returns."""

    def __init__(self, clock: FakeClock, crashes: int, runtime: float = 0.0) -> None:
        self.clock, self.crashes, self.runtime, self.runs = clock, crashes, runtime, 0

    async def __call__(self) -> None:
        self.runs += 1
        self.clock.time += self.runtime
        if self.runs <= self.crashes:
            raise RuntimeError(f"crash {self.runs}")


async def test_delays_grow_exponentially_up_to_the_cap() -> None:
    clock = FakeClock()
    child = Child(clock, crashes=6)
    policy = BackoffPolicy(min_backoff=1, max_backoff=8, random_factor=0, reset_after=100)
    await BackoffSupervisor("c", child, policy, clock=clock).run()
    assert clock.sleeps == [1, 2, 4, 8, 8, 8]
    assert child.runs == 7


async def test_the_random_factor_stretches_each_delay_within_its_bound() -> None:
    clock = FakeClock()
    policy = BackoffPolicy(min_backoff=1, max_backoff=100, random_factor=0.5, reset_after=100)
    await BackoffSupervisor("c", Child(clock, crashes=5), policy, clock=clock, rng=random.Random(7)).run()
    for n, delay in enumerate(clock.sleeps):
        assert 2**n <= delay <= 2**n * 1.5
    assert len({delay / 2**n for n, delay in enumerate(clock.sleeps)}) > 1


async def test_a_healthy_period_starts_the_delays_afresh() -> None:
    clock = FakeClock()
    policy = BackoffPolicy(min_backoff=1, max_backoff=64, random_factor=0, reset_after=10)
    await BackoffSupervisor("c", Child(clock, crashes=4, runtime=11), policy, clock=clock).run()
    assert clock.sleeps == [1, 1, 1, 1]


async def test_too_many_restarts_within_the_window_escalate() -> None:
    clock = FakeClock()
    failures: list[tuple[str, str, float]] = []
    hooks = Hooks(on_failure=lambda name, exc, delay: failures.append((name, str(exc), delay)))
    policy = BackoffPolicy(min_backoff=1, max_backoff=1, random_factor=0, max_restarts=3, within=60)
    supervisor = BackoffSupervisor("projector", Child(clock, crashes=10), policy, hooks, clock)
    with pytest.raises(SupervisorGaveUp, match="projector crashed 4 times within 60 s"):
        await supervisor.run()
    assert [message for _, message, _ in failures] == ["crash 1", "crash 2", "crash 3", "crash 4"]


async def test_restarts_spread_out_beyond_the_window_never_escalate() -> None:
    clock = FakeClock()
    policy = BackoffPolicy(min_backoff=1, max_backoff=1, random_factor=0, max_restarts=2, within=5)
    child = Child(clock, crashes=8, runtime=6)
    await BackoffSupervisor("c", child, policy, clock=clock).run()
    assert child.runs == 9


async def test_hooks_see_every_start_stop_and_failure_and_cannot_break_it() -> None:
    clock = FakeClock()
    seen: list[str] = []

    def start(name: str, restarts: int) -> None:
        seen.append(f"start {name} {restarts}")
        raise ValueError("a broken hook")

    hooks = Hooks(
        on_start=start,
        on_stop=lambda name: seen.append(f"stop {name}"),
        on_failure=lambda name, exc, delay: seen.append(f"fail {name} {exc} {delay:g}"),
    )
    policy = BackoffPolicy(min_backoff=2, random_factor=0)
    await BackoffSupervisor("d", Child(clock, crashes=1), policy, hooks, clock).run()
    assert seen == ["start d 0", "fail d crash 1 2", "start d 1", "stop d"]


def test_the_delay_stays_at_the_maximum_however_many_failures() -> None:
    # A stage failing at once for hours must not overflow the delay (and crash the supervisor).
    policy = BackoffPolicy(min_backoff=0.001, max_backoff=30.0, random_factor=0.0)
    rng = random.Random(1)
    assert [policy.delay(n, rng) for n in (1, 2, 16)] == [0.001, 0.002, 30.0]
    assert policy.delay(10_000, rng) == 30.0


class Dependency:
    """Down until fake time ``back_at``; counts how often it was asked."""

    def __init__(self, clock: FakeClock, back_at: float) -> None:
        self.clock, self.back_at, self.asked = clock, back_at, 0

    async def answers(self) -> bool:
        self.asked += 1
        if self.clock.time < self.back_at:
            raise ConnectionError("refused")
        return True


async def test_a_crash_while_the_dependency_is_down_restarts_within_a_probe_of_its_return() -> None:
    clock = FakeClock()
    policy = BackoffPolicy(min_backoff=30, max_backoff=30, random_factor=0)
    store = Dependency(clock, back_at=3.5)
    child = Child(clock, crashes=1)
    await BackoffSupervisor("p", child, policy, clock=clock, recovered=store.answers).run()
    assert child.runs == 2
    # Asked at the crash (down), then each second: back at 3.5, seen at 4, not at 30.
    assert clock.time == 4.0
    assert clock.sleeps == [1.0, 1.0, 1.0, 1.0]


async def test_a_crash_while_the_dependency_answers_waits_the_whole_backoff() -> None:
    clock = FakeClock()
    policy = BackoffPolicy(min_backoff=8, max_backoff=8, random_factor=0)
    store = Dependency(clock, back_at=0.0)
    await BackoffSupervisor("p", Child(clock, crashes=1), policy, clock=clock, recovered=store.answers).run()
    assert clock.sleeps == [8]
    assert store.asked == 1


async def test_a_dependency_down_for_longer_than_the_backoff_costs_no_more_than_it() -> None:
    clock = FakeClock()
    policy = BackoffPolicy(min_backoff=2.5, max_backoff=2.5, random_factor=0)
    store = Dependency(clock, back_at=100.0)
    await BackoffSupervisor("p", Child(clock, crashes=1), policy, clock=clock, recovered=store.answers).run()
    assert clock.sleeps == [1.0, 1.0, 0.5]
