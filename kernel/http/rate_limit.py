"""Rate limiting per caller: a token bucket per subject, in memory, per process.

Each subject may make ``rate`` requests a second on average, and ``burst`` at
once; past that it gets 429 with ``Retry-After`` (the seconds until a token is
back). Buckets that have filled up again are forgotten, so memory follows the
callers active in the last few seconds, not every caller ever seen.
"""

from __future__ import annotations

import math
import time

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RateLimitSettings(BaseSettings):
    """Requests per second and burst per subject (``MERLIN_RATE_LIMIT_*``); 0 turns limiting off."""

    model_config = SettingsConfigDict(env_prefix="MERLIN_RATE_LIMIT_", extra="ignore")

    per_second: float = Field(
        default=1000.0,
        ge=0,
        description="Requests a second each caller (the token's `sub`) may make of each API process on "
        "average; past it, `429` with `Retry-After`; 0 turns limiting off.",
    )
    burst: int = Field(default=2000, ge=1, description="Requests a caller may make at once.")


class RateLimiter:
    """Token buckets keyed by subject."""

    def __init__(self, per_second: float, burst: int) -> None:
        self.per_second = per_second
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}  # subject -> (tokens, at)
        self._sweep_at = 10_000

    def wait(self, subject: str, now: float | None = None) -> float:
        """0 if ``subject`` may go ahead now (one token taken); else the seconds until it may."""
        if self.per_second <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        tokens, at = self._buckets.get(subject, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.per_second)
        if tokens < 1.0:
            self._buckets[subject] = (tokens, now)
            return (1.0 - tokens) / self.per_second
        self._buckets[subject] = (tokens - 1.0, now)
        if len(self._buckets) > self._sweep_at:
            self._sweep(now)
        return 0.0

    def _sweep(self, now: float) -> None:
        """Forget the buckets that are full again: they would start full anyway."""
        full_after = self.burst / self.per_second
        self._buckets = {s: (t, at) for s, (t, at) in self._buckets.items() if now - at < full_after}
        self._sweep_at = max(10_000, 2 * len(self._buckets))


def limiter_for(settings: RateLimitSettings) -> RateLimiter | None:
    """The limiter these settings ask for (None when ``per_second`` is 0)."""
    return RateLimiter(settings.per_second, settings.burst) if settings.per_second > 0 else None


def retry_after(seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
