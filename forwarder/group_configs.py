"""Consumer group configs (KIP-848): under the consumer group protocol a group's session timeout and
heartbeat interval are the broker's to keep, set per group through the admin API."""

from __future__ import annotations

import asyncio

from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from kernel.admin_calls import AdminCallFailed, answer
from kernel.settings import KafkaSettings


async def configure_groups(
    kafka: KafkaSettings, groups: list[str], configs: dict[str, str], timeout: float = 10.0
) -> dict[str, str]:
    """Set ``configs`` on each of ``groups``; per group the broker refused, its reason."""
    admin = AdminClient(kafka.client({}))
    resources = [
        ConfigResource(
            ResourceType.GROUP,
            group,
            incremental_configs=[
                ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)
                for name, value in configs.items()
            ],
        )
        for group in groups
    ]
    futures = await asyncio.to_thread(admin.incremental_alter_configs, resources)
    refused: dict[str, str] = {}
    for resource, future in futures.items():
        try:
            await answer(future, f"configuring group {resource.name}", timeout)
        except AdminCallFailed as exc:
            refused[resource.name] = str(exc)
    return refused
