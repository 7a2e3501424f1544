"""An endpoint failing longer than it allows is disabled: paused everywhere, with the reason."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, cast

from forwarder.controls import Controls
from forwarder.metrics import ForwarderMetrics
from kernel.control import ControlLog, ControlWriter
from kernel.producer import AsyncProducer
from kernel.settings import KafkaSettings
from tests.unit.fakes import until
from webhooks.endpoints import Endpoint

SECRET = "whsec_" + "A" * 32


class Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None]] = []

    async def send(self, topic: str, value: bytes | None, key: bytes | None = None) -> tuple[int, int]:
        self.sent.append((topic, value, key))
        return 0, len(self.sent)


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _controls(clock: Clock) -> tuple[Controls, ControlLog, ForwarderMetrics]:
    log = ControlLog(KafkaSettings())
    metrics = ForwarderMetrics()
    writer = ControlWriter(cast(AsyncProducer, Producer()), log)
    return Controls(log, writer, "worker-1", metrics, clock=clock), log, metrics


ENDPOINTS = {
    "hook": Endpoint(name="hook", url="http://hooks.example/", secret=SECRET, disable_after_seconds=60),
    "other": Endpoint(name="other", url="http://hooks.example/", secret=SECRET),
}


def test_an_endpoint_is_failing_too_long_from_its_first_failure_since_a_success() -> None:
    clock = Clock()
    controls, _log, _metrics = _controls(clock)
    controls.delivered("hook", "delivered")
    started = clock.now
    controls.delivered("hook", "dead_lettered")
    clock.now += 30
    controls.delivered("hook", "blocked")  # still failing: the clock runs from the first failure
    clock.now += 29
    assert controls.failing_too_long(ENDPOINTS) == {}
    clock.now += 1
    assert controls.failing_too_long(ENDPOINTS) == {"hook": started}
    controls.delivered("hook", "delivered")
    assert controls.failing_too_long(ENDPOINTS) == {}


def test_skips_endpoints_without_a_limit_and_what_operators_did() -> None:
    clock = Clock()
    controls, _log, _metrics = _controls(clock)
    controls.delivered("other", "dead_lettered")
    controls.delivered("hook", "skipped")  # an operator's skip is not the endpoint failing
    clock.now += 3600
    assert controls.failing_too_long(ENDPOINTS) == {}


async def test_disabling_pauses_with_the_reason_counts_it_and_a_resume_gives_the_whole_time_again() -> None:
    clock = Clock()
    controls, log, metrics = _controls(clock)
    controls.delivered("hook", "dead_lettered")
    clock.now += 61
    task = asyncio.create_task(controls.disable_failing(lambda: ENDPOINTS, 0.001))
    await until(lambda: "paused/hook" in log.values, "the endpoint disabled")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    record: dict[str, Any] = log.values["paused/hook"]
    assert record["by"] == "disabled"
    assert record["reason"] == "no delivery succeeded for 61 s (failing since 2027-01-15T08:00:00.000000Z)"
    assert metrics.disabled_total.labels("hook")._value.get() == 1
    assert controls.failing_too_long(ENDPOINTS) == {}  # paused: not again
    log.apply([("paused/hook", record)])  # read back from the topic
    assert metrics.disabled.labels("hook")._value.get() == 1
    log.apply([("paused/hook", None)])  # resumed by an operator
    assert metrics.disabled.labels("hook")._value.get() == 0
    clock.now += 3600
    assert controls.failing_too_long(ENDPOINTS) == {}  # nothing failed since the resume
