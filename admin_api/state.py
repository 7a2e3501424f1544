"""The admin API's app-wide state, as one typed object: settings, the control channel, Kafka's admin API."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import structlog
from prometheus_client import Counter
from starlette.exceptions import HTTPException
from starlette.requests import Request

from admin_api.groups import Groups
from admin_api.settings import AdminApiSettings
from kernel.control import PAUSED, ControlLog, ControlWriter, counted_skips, key
from kernel.kafka_stats import KafkaStats
from kernel.metrics import service_registry
from kernel.producer import AsyncProducer
from kernel.settings import KafkaSettings
from webhooks.calls import HttpSend
from webhooks.catalog import ENDPOINT, DefinitionUnreadable, check_record, decode, shown
from webhooks.endpoints import Endpoint, endpoint_group, load_endpoints
from webhooks.given import define_given
from webhooks.settings import EndpointsSettings

log = structlog.get_logger()


class AdminApi:
    """What every route of the admin API shares; its Kafka clients live while the app runs."""

    def __init__(
        self, settings: AdminApiSettings, kafka: KafkaSettings, endpoints: EndpointsSettings
    ) -> None:
        self.settings = settings
        self.kafka = kafka
        self.endpoint_settings = endpoints
        self.box = endpoints.box()
        self.registry = service_registry()
        self.actions = Counter(
            "merlin_admin_actions", "Operator actions taken", ["action", "endpoint"], registry=self.registry
        )
        self.skipped = counted_skips(self.registry)
        self.kafka_stats = KafkaStats(self.registry)
        self._control: ControlLog | None = None
        self._writer: ControlWriter | None = None
        self._groups: Groups | None = None
        self._send: HttpSend | None = None

    @classmethod
    def of(cls, request: Request) -> AdminApi:
        """The state of the app that serves ``request``."""
        state: AdminApi = request.app.state.admin_api
        return state

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Follow the settings topic and open the Kafka clients for as long as the app runs."""
        reader = self.kafka_stats.config("consumer:settings", self.kafka.statistics_interval_ms)
        control = ControlLog(self.kafka, shapes={ENDPOINT: check_record}, skipped=self.skipped, client=reader)
        await control.start()
        stats = self.kafka_stats.config("producer", self.kafka.statistics_interval_ms)
        producer = AsyncProducer(self.kafka.client({"acks": "all", "enable.idempotence": True, **stats}))
        self._control, self._writer = control, ControlWriter(producer, control)
        given = load_endpoints(self.settings.endpoints_file)
        await define_given(given, control, self._writer, self.box, self.endpoint_settings.allowed_networks)
        self._groups = Groups(self.kafka.client(), self.kafka.events_topic)
        self._send = HttpSend(64, allowed=self.endpoint_settings.allowed_networks)
        try:
            yield
        finally:
            await self._send.close()
            await producer.close()
            await control.close()
            self._control = self._writer = self._groups = self._send = None

    @property
    def control(self) -> ControlLog:
        return _running(self._control)

    @property
    def writer(self) -> ControlWriter:
        return _running(self._writer)

    @property
    def groups(self) -> Groups:
        return _running(self._groups)

    @property
    def send(self) -> HttpSend:
        return _running(self._send)

    def record(self, name: str) -> dict[str, Any]:
        """The settings-topic record defining ``name``, or a 404."""
        found = self.control.values.get(key(ENDPOINT, name))
        if found is None:
            raise HTTPException(404, f"no endpoint named {name!r}")
        return found

    def records(self) -> dict[str, dict[str, Any]]:
        return self.control.under(ENDPOINT)

    def endpoint(self, name: str) -> Endpoint:
        """The endpoint called ``name`` (its secrets opened); a 404 if none, a 409 if its record is
        none this version reads (written by hand, or by a newer version)."""
        try:
            return decode(name, self.record(name), self.box)
        except DefinitionUnreadable as exc:
            raise HTTPException(409, f"{exc}: define it again (PUT, with its secret) or delete it") from None

    def readable_endpoint(self, name: str) -> Endpoint | None:
        """The endpoint called ``name``, or None if there is none or none this version reads."""
        if key(ENDPOINT, name) not in self.control.values:
            return None
        with contextlib.suppress(HTTPException):
            return self.endpoint(name)
        return None

    def view(self, name: str, record: dict[str, Any]) -> dict[str, Any]:
        """An endpoint as the admin API shows it: secrets as fingerprints, and whether it is paused."""
        return {**shown(name, record), "paused": key(PAUSED, name) in self.control.values}

    def group(self, endpoint: str) -> str:
        return endpoint_group(self.settings.forwarder_group, endpoint)

    def acted(self, action: str, endpoint: str, **details: Any) -> None:
        """Log and count an operator's action."""
        self.actions.labels(action, endpoint).inc()
        log.info("operator_action", action=action, endpoint=endpoint, **details)

    async def readiness(self) -> dict[str, bool]:
        try:
            await self.groups.partitions()
        except Exception:  # any failure to reach the broker means not ready
            return {"kafka": False}
        return {"kafka": True}


T = TypeVar("T")


def _running(part: T | None) -> T:
    """``part`` of the running app; an error when the app is not running (so it is not set)."""
    if part is None:
        raise RuntimeError("the admin API is not running")
    return part
