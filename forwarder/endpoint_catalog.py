"""The endpoints the settings topic defines, as this forwarder instance runs them.

Every instance reads the whole topic (``kernel.control``), so each sees every
definition; a change is decoded here and handed to ``EndpointFlows``. A record
this instance cannot read (a key it lacks, a newer schema, an inner address it
may not call) is logged and counted, and the definition it had stays in force.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from forwarder.metrics import ForwarderMetrics
from kernel.control import ControlLog
from webhooks.catalog import ENDPOINT, DefinitionUnreadable, decode
from webhooks.endpoints import Endpoint
from webhooks.secret_box import SecretBox, SecretUnreadable
from webhooks.url_safety import AllowedNetworks, UnsafeAddress, check_literal

log = structlog.get_logger()


class EndpointCatalog:
    """Decoded endpoint definitions by name; ``changed()`` yields each name whose definition changed."""

    def __init__(
        self, control: ControlLog, box: SecretBox | None, metrics: ForwarderMetrics, allowed: AllowedNetworks
    ) -> None:
        self.endpoints: dict[str, Endpoint] = {}
        self.versions: dict[str, int] = {}
        self._box = box
        self._metrics = metrics
        self._allowed = allowed
        self._changes: asyncio.Queue[str] = asyncio.Queue()
        for name, record in control.under(ENDPOINT).items():
            self._take(name, record)
        control.listen(self._heard)

    async def changed(self) -> str:
        """The name of the next endpoint defined, redefined or deleted."""
        return await self._changes.get()

    def _heard(self, key: str, record: dict[str, Any] | None) -> None:
        kind, _, name = key.partition("/")
        if kind == ENDPOINT and self._take(name, record):
            self._changes.put_nowait(name)

    def _take(self, name: str, record: dict[str, Any] | None) -> bool:
        """Hold ``record`` as ``name``'s definition; whether anything changed."""
        if record is None:
            if self.versions.pop(name, None) is not None:
                self._metrics.definition_version.remove(name)
            return self.endpoints.pop(name, None) is not None
        if record.get("version") == self.versions.get(name):
            return False  # read back after this instance wrote it
        try:
            if self._box is None:
                raise SecretUnreadable("MERLIN_ENDPOINTS_SECRET_KEYS is empty: no secret can be opened")
            endpoint = decode(name, record, self._box)
            # A name is checked whenever it is resolved (url_safety.addresses); a literal address
            # never is, so here.
            check_literal(endpoint.url.host or "", self._allowed)
        except (DefinitionUnreadable, SecretUnreadable, UnsafeAddress) as exc:
            self._metrics.definitions_refused.labels(name).inc()
            log.error(
                "endpoint_definition_refused", endpoint=name, version=record.get("version"), error=str(exc)
            )
            return False
        self.endpoints[name], self.versions[name] = endpoint, int(record["version"])
        self._metrics.definition_version.labels(name).set(self.versions[name])
        log.info("endpoint_defined", endpoint=name, version=self.versions[name], url=endpoint.shown_url)
        return True
