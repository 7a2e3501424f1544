"""The forwarder's operations listener: ``/healthz``, ``/readyz`` and ``/metrics``, on the worker's own loop
(``kernel.operations_listener``).

Ready means the settings topic was read and the worker reads its own pings
back through it (``forwarder.subscription``), every flow is running (none backing
off after a crash), a consumer polled recently, every partition of the events
topic has a leader, and the read store answers; ``subscription`` gives that
check's state. Answers are JSON;
a worker that is not ready answers problem+json 503 with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from prometheus_client import CollectorRegistry

from forwarder.metrics import ForwarderMetrics
from forwarder.subscription import SubscriptionCheck
from kernel.operations_listener import serving as listening

_PING_TIMEOUT = 2.0


class Health:
    """What readiness looks at; the worker keeps ``running`` (per flow) up to date."""

    def __init__(
        self,
        metrics: ForwarderMetrics,
        poll_timeout: float,
        ping: Callable[[], Awaitable[None]],
        broker: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self.metrics = metrics
        self.running: dict[str, bool] = {}
        self._stale_after = max(5.0, 10 * poll_timeout)
        self._ping = ping
        self._broker = broker
        self.subscription: SubscriptionCheck | None = None  # once the settings topic was read

    async def store_answers(self) -> bool:
        """True when the read store answers within a bound."""
        try:
            await asyncio.wait_for(self._ping(), _PING_TIMEOUT)
        except Exception:  # any failure to reach the store means it does not answer
            return False
        return True

    async def checks(self) -> dict[str, bool]:
        polling = time.monotonic() - self.metrics.last_poll_at < self._stale_after
        store = await self.store_answers()
        flows = bool(self.running) and all(self.running.values())
        kafka = True if self._broker is None else await self._broker()
        settings = self.subscription is not None and self.subscription.state == "ok"
        return {"settings": settings, "flow": flows, "polling": polling, "kafka": kafka, "read_store": store}

    def subscription_state(self) -> dict[str, object]:
        if self.subscription is None:
            return {"state": "starting", "renewals": 0}
        return self.subscription.status()


@asynccontextmanager
async def serving(host: str, port: int, registry: CollectorRegistry, health: Health) -> AsyncIterator[None]:
    """Serve the operations routes on ``host:port`` while the block runs (``kernel.operations_listener``)."""

    def details() -> dict[str, object]:
        return {"subscription": health.subscription_state()}

    async with listening(host, port, lambda: registry, health.checks, details):
        yield
