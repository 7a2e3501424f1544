"""The admin API's app-wide state, as one typed object: settings, the control channel, Kafka's admin API."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import structlog
from prometheus_client import CollectorRegistry, Counter
from starlette.exceptions import HTTPException
from starlette.requests import Request

from admin_api.groups import Groups
from admin_api.settings import AdminApiSettings
from kernel.control import ControlLog, ControlWriter
from kernel.producer import AsyncProducer
from kernel.settings import KafkaSettings
from webhooks.endpoints import Endpoint, load_endpoints
from webhooks.sending import AiohttpSend

log = structlog.get_logger()


class AdminApi:
    """What every route of the admin API shares; its Kafka clients live while the app runs."""

    def __init__(self, settings: AdminApiSettings, kafka: KafkaSettings) -> None:
        self.settings = settings
        self.kafka = kafka
        self.endpoints = {e.name: e for e in load_endpoints(settings.endpoints_file)}
        self.registry = CollectorRegistry()
        self.actions = Counter(
            "merlin_admin_actions", "Operator actions taken", ["action", "endpoint"], registry=self.registry
        )
        self._control: ControlLog | None = None
        self._writer: ControlWriter | None = None
        self._groups: Groups | None = None
        self._send: AiohttpSend | None = None

    @classmethod
    def of(cls, request: Request) -> AdminApi:
        """The state of the app that serves ``request``."""
        state: AdminApi = request.app.state.admin_api
        return state

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Follow the settings topic and open the Kafka clients for as long as the app runs."""
        control = ControlLog(self.kafka)
        await control.start()
        producer = AsyncProducer(self.kafka.client({"acks": "all", "enable.idempotence": True}))
        self._control, self._writer = control, ControlWriter(producer, control)
        self._groups = Groups(self.kafka.client(), self.kafka.events_topic)
        self._send = AiohttpSend(64)
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
    def send(self) -> AiohttpSend:
        return _running(self._send)

    def endpoint(self, name: str) -> Endpoint:
        """The endpoint called ``name``, or a 404."""
        found = self.endpoints.get(name)
        if found is None:
            raise HTTPException(404, f"no endpoint named {name!r}")
        return found

    def group(self, endpoint: str) -> str:
        return f"{self.settings.forwarder_group}.endpoint.{endpoint}"

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


def describe(endpoint: Endpoint, paused: bool) -> dict[str, Any]:
    """An endpoint as the admin API shows it: its secret as a fingerprint, its URL without credentials."""
    return {
        "name": endpoint.name,
        "url": endpoint.shown_url,
        "event_types": sorted(endpoint.event_types),
        "timeout": endpoint.timeout,
        "max_in_flight": endpoint.max_in_flight,
        "on_failure": endpoint.on_failure,
        "since": endpoint.since.isoformat() if endpoint.since else None,
        "secret_fingerprint": "sha256:" + hashlib.sha256(endpoint.secret.encode()).hexdigest()[:16],
        "paused": paused,
    }
