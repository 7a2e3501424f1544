"""merlin's topics through the AdminClient: created here (broker auto-creation is off), and their ends."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    OffsetSpec,
    ResourceType,
)
from confluent_kafka.cimpl import NewTopic

from kernel.admin_calls import AdminCallFailed, answer
from kernel.errors import InfrastructureError
from kernel.settings import KafkaSettings


@dataclass(frozen=True)
class TopicPlan:
    """A topic as the settings want it: size, replication and the configs merlin pins."""

    name: str
    partitions: int
    replication: int
    config: dict[str, str]

    def new_topic(self) -> NewTopic:
        return NewTopic(self.name, self.partitions, self.replication, config=dict(self.config))


def topic_plans(settings: KafkaSettings) -> list[TopicPlan]:
    """The events, dead-letter and settings topics, from ``settings``.

    The events topic is the system of record: kept for ever unless the settings say
    otherwise, and never led by a replica that may have missed acknowledged writes.
    """
    safe = {
        "min.insync.replicas": str(settings.min_insync),
        "unclean.leader.election.enable": "false",
    }
    kept = {
        **safe,
        "retention.ms": str(settings.retention_ms),
        "retention.bytes": str(settings.retention_bytes),
    }
    replication = settings.replication_factor
    return [
        TopicPlan(settings.events_topic, settings.partitions, replication, kept),
        TopicPlan(settings.dead_letter_topic, settings.partitions, replication, kept),
        TopicPlan(settings.settings_topic, 1, replication, {**safe, "cleanup.policy": "compact"}),
    ]


@dataclass
class TopicsReport:
    """What ``ensure_topics`` did and what an operator should know."""

    created: list[str] = field(default_factory=list)
    altered: list[str] = field(default_factory=list)  # "topic: key old -> new"
    warnings: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """What an operator reads after ``merlin topics create`` (or ``merlin dev``)."""
        return [
            *(f"topics: warning: {warning}" for warning in self.warnings),
            *(f"topics: set {change}" for change in self.altered),
            *([f"topics: created {', '.join(self.created)}"] if self.created else []),
            *([] if self.created or self.altered else ["topics: all present, as the settings say"]),
        ]


class TopicsMismatch(InfrastructureError):
    """Topics exist in a shape merlin cannot change for you (partitions, replication)."""


_ADMIN_TIMEOUT = 30.0


async def ensure_topics(settings: KafkaSettings, plans: list[TopicPlan] | None = None) -> TopicsReport:
    """Create missing topics and set the pinned configs of existing ones.

    Topics whose partitions or replication differ from the settings are refused
    before anything changes (TopicsMismatch says what and how to fix it).
    """
    admin = AdminClient(settings.client())
    wanted = plans if plans is not None else topic_plans(settings)
    report = TopicsReport()
    metadata = await answer(asyncio.to_thread(admin.list_topics, timeout=_ADMIN_TIMEOUT), "listing topics")
    brokers = len(metadata.brokers)
    if settings.replication_factor == 1 and brokers > 1:
        report.warnings.append(
            f"replication factor 1 on a cluster of {brokers} brokers: losing one broker loses events; "
            f"set MERLIN_KAFKA_REPLICATION_FACTOR={min(3, brokers)}"
        )
    present = {name: topic for name, topic in metadata.topics.items() if topic.error is None}
    problems: list[str] = []
    for plan in wanted:
        found = present.get(plan.name)
        if found is not None:
            problems.extend(_shape_problems(plan, found))
    if problems:
        raise TopicsMismatch("nothing changed:" + "".join(f"\n  - {problem}" for problem in problems))
    report.altered = await _align_configs(admin, [plan for plan in wanted if plan.name in present])
    report.created = await _create(admin, [plan for plan in wanted if plan.name not in present])
    await _visible(admin, {plan.name: plan.partitions for plan in wanted if plan.name in report.created})
    return report


async def _visible(admin: AdminClient, partitions: dict[str, int], within: float = _ADMIN_TIMEOUT) -> None:
    """Return once the broker that answers knows every topic just created, with all its partitions.

    The controller answers a creation once it has committed it; a broker applies it to the metadata
    it serves a moment later, and until then a client of a topic `topics create` said it made is
    told the topic is unknown. Bounded: past ``within`` s the topics are left to appear on their own.
    """
    deadline = asyncio.get_running_loop().time() + within
    while partitions and asyncio.get_running_loop().time() < deadline:
        metadata = await asyncio.to_thread(admin.list_topics, timeout=_ADMIN_TIMEOUT)
        known = metadata.topics
        if all(
            name in known and known[name].error is None and len(known[name].partitions) == count
            for name, count in partitions.items()
        ):
            return
        await asyncio.sleep(0.05)


def _shape_problems(plan: TopicPlan, found: Any) -> list[str]:
    problems = []
    partitions = len(found.partitions)
    if partitions != plan.partitions:
        problems.append(
            f"{plan.name} has {partitions} partitions where the settings say {plan.partitions}: "
            "Kafka cannot remove partitions, and adding some moves rooms to other partitions "
            "(their order breaks); set MERLIN_KAFKA_PARTITIONS to match, or move to a new topic"
        )
    replicas = min((len(p.replicas) for p in found.partitions.values()), default=0)
    if replicas != plan.replication:
        problems.append(
            f"{plan.name} has replication factor {replicas} where the settings say {plan.replication}: "
            "change it with a partition reassignment (kafka-reassign-partitions.sh), "
            "or set MERLIN_KAFKA_REPLICATION_FACTOR to match"
        )
    return problems


async def _align_configs(admin: AdminClient, plans: list[TopicPlan]) -> list[str]:
    """Set the configs that differ from the plans; return one line per change."""
    if not plans:
        return []
    resources = [ConfigResource(ResourceType.TOPIC, plan.name) for plan in plans]
    described = admin.describe_configs(resources, request_timeout=_ADMIN_TIMEOUT)
    changes: list[str] = []
    alterations: list[ConfigResource] = []
    for plan, resource in zip(plans, resources, strict=True):
        entries: dict[str, Any] = await answer(described[resource], f"reading the configs of {plan.name}")
        differing = {
            key: value
            for key, value in plan.config.items()
            if key not in entries or entries[key].value != value
        }
        if not differing:
            continue
        changes.extend(
            f"{plan.name}: {key} {entries[key].value if key in entries else '(unset)'} -> {value}"
            for key, value in differing.items()
        )
        alterations.append(
            ConfigResource(
                ResourceType.TOPIC,
                plan.name,
                incremental_configs=[
                    ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
                    for key, value in differing.items()
                ],
            )
        )
    if alterations:
        altered = admin.incremental_alter_configs(alterations, request_timeout=_ADMIN_TIMEOUT)
        for resource, future in altered.items():
            await answer(future, f"altering the configs of {resource.name}")
    return changes


async def _create(admin: AdminClient, plans: list[TopicPlan]) -> list[str]:
    if not plans:
        return []
    futures = admin.create_topics(
        [plan.new_topic() for plan in plans], operation_timeout=_ADMIN_TIMEOUT, request_timeout=_ADMIN_TIMEOUT
    )
    created: list[str] = []
    for name, future in futures.items():
        try:
            await answer(future, f"creating topic {name}", _ADMIN_TIMEOUT)
        except AdminCallFailed as exc:
            if exc.code == KafkaError.TOPIC_ALREADY_EXISTS:
                continue  # made meanwhile by another instance: the next run checks its shape
            raise
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
