"""A backoff supervisor: runs a child coroutine, restarts it when it crashes, never crashes itself.

Delays grow exponentially from ``min_backoff`` to ``max_backoff``, each scaled
by a random factor in ``[1, 1 + random_factor]``; they start afresh once the
child has run for ``reset_after`` seconds. With ``max_restarts``, more
restarts than that within ``within`` seconds escalate: ``run`` raises
``SupervisorGaveUp`` so the process can exit non-zero for its manager.

With ``recovered`` (does the child's dependency answer?), a crash while the
dependency is down does not wait out the whole delay: the supervisor asks
every ``probe_every`` seconds and restarts as soon as it answers again.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from domain.errors import MerlinError


class SupervisorGaveUp(MerlinError):
    """A child crashed more often than its restart limit allows."""


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class MonotonicClock:
    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(frozen=True)
class BackoffPolicy:
    min_backoff: float = 0.5
    max_backoff: float = 30.0
    random_factor: float = 0.2
    reset_after: float = 30.0
    max_restarts: int | None = None
    within: float = 60.0

    def delay(self, failures: int, rng: random.Random) -> float:
        """The delay before restart number ``failures`` (1-based)."""
        # The exponent is capped: past ~1,000 failures 2**n no longer fits a float.
        base = min(self.max_backoff, self.min_backoff * 2 ** min(failures - 1, 64))
        return float(base * (1 + rng.random() * self.random_factor))


@dataclass
class Hooks:
    """Called on child start, normal stop and failure; exceptions they raise are ignored."""

    on_start: Callable[[str, int], None] = lambda _name, _restarts: None
    on_stop: Callable[[str], None] = lambda _name: None
    on_failure: Callable[[str, BaseException, float], None] = lambda _name, _exc, _delay: None


@dataclass
class BackoffSupervisor:
    name: str
    child: Callable[[], Awaitable[None]]
    policy: BackoffPolicy = field(default_factory=BackoffPolicy)
    hooks: Hooks = field(default_factory=Hooks)
    clock: Clock = field(default_factory=MonotonicClock)
    rng: random.Random = field(default_factory=random.Random)
    recovered: Callable[[], Awaitable[bool]] | None = None
    probe_every: float = 1.0
    restarts: int = 0

    async def run(self) -> None:
        """Run the child until it returns normally; restart it after each crash."""
        failures = 0
        recent: deque[float] = deque()
        while True:
            started = self.clock.now()
            _safely(self.hooks.on_start, self.name, self.restarts)
            try:
                await self.child()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a crashing child is what a supervisor is for
                now = self.clock.now()
                if now - started >= self.policy.reset_after:
                    failures = 0
                failures += 1
                recent.append(now)
                while recent and now - recent[0] > self.policy.within:
                    recent.popleft()
                limit = self.policy.max_restarts
                if limit is not None and len(recent) > limit:
                    delay = 0.0
                    _safely(self.hooks.on_failure, self.name, exc, delay)
                    raise SupervisorGaveUp(
                        f"{self.name} crashed {len(recent)} times within {self.policy.within:g} s"
                    ) from exc
                delay = self.policy.delay(failures, self.rng)
                _safely(self.hooks.on_failure, self.name, exc, delay)
                await self._back_off(delay)
                self.restarts += 1
                continue
            _safely(self.hooks.on_stop, self.name)
            return

    async def _back_off(self, delay: float) -> None:
        """Wait ``delay``, or less when the dependency that was down when the child crashed is back."""
        if self.recovered is None or await _answers(self.recovered):
            await self.clock.sleep(delay)  # not an outage we can watch: the full delay
            return
        deadline = self.clock.now() + delay
        while (left := deadline - self.clock.now()) > 0:
            await self.clock.sleep(min(self.probe_every, left))
            if await _answers(self.recovered):
                return


async def _answers(probe: Callable[[], Awaitable[bool]]) -> bool:
    try:
        return await probe()
    except Exception:  # a probe that fails means "not back yet"
        return False


def _safely(hook: Callable[..., None], *args: object) -> None:
    try:
        hook(*args)
    except Exception:  # a broken hook must not break supervision
        return
