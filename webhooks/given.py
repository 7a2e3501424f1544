"""Endpoints given at start (``MERLIN_ENDPOINTS_FILE``), defined in the settings topic.

Each is created, or updated where it differs (a new secret rotates as a ``PUT``
would), and endpoints defined otherwise are left alone: the file adds to what
operators define through the admin API, it does not replace it.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

import structlog

from kernel.control import ControlLog, ControlWriter, key
from kernel.errors import InfrastructureError
from webhooks.catalog import ENDPOINT, DefinitionUnreadable, comparable, decode, encode, merged
from webhooks.endpoints import Endpoint, EndpointSpec
from webhooks.secret_box import SecretBox, SecretUnreadable
from webhooks.url_safety import AllowedNetworks, UnsafeAddress, check_url

log = structlog.get_logger()


async def define_given(
    given: list[Endpoint],
    control: ControlLog,
    writer: ControlWriter,
    box: SecretBox | None,
    allowed: AllowedNetworks,
) -> None:
    """Define ``given`` in the settings topic that ``control`` follows (see the module)."""
    if not given:
        return
    if box is None:
        raise InfrastructureError(
            "MERLIN_ENDPOINTS_FILE defines endpoints but MERLIN_ENDPOINTS_SECRET_KEYS is empty: "
            "their secrets are sealed with it in the settings topic (`merlin endpoints new-key`)"
        )
    now = datetime.now(UTC)
    for endpoint in given:
        try:
            await check_url(endpoint.url, allowed)
        except UnsafeAddress as exc:
            raise InfrastructureError(f"endpoint {endpoint.name}: {exc}") from None
        record = control.values.get(key(ENDPOINT, endpoint.name))
        current = None
        if record is not None:
            with contextlib.suppress(DefinitionUnreadable, SecretUnreadable):
                current = decode(endpoint.name, record, box)
        if current is not None and comparable(current) == comparable(endpoint):
            continue
        spec = EndpointSpec.model_validate(endpoint.model_dump(include=set(EndpointSpec.model_fields)))
        defined = merged(endpoint.name, spec, current, now)
        version = int(record["version"]) + 1 if record is not None else 1
        await writer.put(key(ENDPOINT, endpoint.name), encode(defined, box, version, now))
        log.info("endpoint_defined_from_file", endpoint=endpoint.name, version=version)
