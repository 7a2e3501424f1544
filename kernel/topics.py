"""merlin's topics through the AdminClient: created here (broker auto-creation is off), and their ends."""

from __future__ import annotations

import asyncio

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]
from confluent_kafka.cimpl import NewTopic

from kernel.errors import InfrastructureError
from kernel.settings import KafkaSettings


def topic_specs(settings: KafkaSettings) -> list[NewTopic]:
    """The events, dead-letter and settings topics, sized from ``settings``."""
    replication = settings.replication_factor
    durable = {"min.insync.replicas": str(min(2, replication))}
    return [
        NewTopic(settings.events_topic, settings.partitions, replication, config=durable),
        NewTopic(settings.dead_letter_topic, settings.partitions, replication, config=durable),
        NewTopic(settings.settings_topic, 1, replication, config={**durable, "cleanup.policy": "compact"}),
    ]


_ADMIN_TIMEOUT = 30.0


async def ensure_topics(settings: KafkaSettings, specs: list[NewTopic] | None = None) -> list[str]:
    """Create the topics that are missing; return the names created."""
    admin = AdminClient(settings.client())
    wanted = specs if specs is not None else topic_specs(settings)
    futures = admin.create_topics(wanted, operation_timeout=_ADMIN_TIMEOUT, request_timeout=_ADMIN_TIMEOUT)
    created: list[str] = []
    for name, future in futures.items():
        try:
            await asyncio.wait_for(asyncio.wrap_future(future), _ADMIN_TIMEOUT)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise InfrastructureError(f"creating topic {name} failed: {error.str()}") from exc
        except TimeoutError as exc:
            raise InfrastructureError(f"creating topic {name} timed out after {_ADMIN_TIMEOUT} s") from exc
        created.append(name)
    return created


async def delete_topics(settings: KafkaSettings, names: list[str]) -> None:
    """Delete ``names``; topics that do not exist are ignored."""
    if not names:
        return
    admin = AdminClient(settings.client())
    for future in admin.delete_topics(names, operation_timeout=_ADMIN_TIMEOUT).values():
        try:
            await asyncio.wait_for(asyncio.wrap_future(future), _ADMIN_TIMEOUT)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise InfrastructureError(f"deleting topics failed: {exc}") from exc


async def end_offsets(admin: AdminClient, topic: str) -> dict[int, int] | None:
    """The log-end offset of every partition of ``topic``; None when the broker does not answer."""
    try:
        metadata = await asyncio.to_thread(admin.list_topics, topic, 2.0)
        found = metadata.topics.get(topic)
        if found is None or found.error is not None:
            return None
        latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
        requests = {TopicPartition(topic, p): latest for p in found.partitions}
        futures = admin.list_offsets(requests, request_timeout=2.0)
        ends: dict[int, int] = {}
        for partition, future in futures.items():
            ends[partition.partition] = (await asyncio.wrap_future(future)).offset
        return ends
    except KafkaException:
        return None
