"""``merlin acls apply``: each service its own SASL/SCRAM user on the broker, allowed only what it does.

The write API alone may write to the events topic; only the forwarders (and the
admin API, to inspect and replay) read it. Run as a super user of the cluster.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, cast

# The stubs list only some of what the package exports.
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialUpsertion,
)
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.errors import MerlinError
from forwarder.settings import ForwarderSettings
from kernel.admin_calls import answer
from kernel.settings import KafkaSettings
from webhooks.endpoints import endpoint_group

_TIMEOUT = 30.0
_ITERATIONS = 8192
_SERVICES = ("write_api", "read_api", "forwarder", "admin_api")


class AccessSettings(BaseSettings):
    """The services' users on the broker and their passwords, which ``merlin acls apply`` sets
    (``MERLIN_ACCESS_*``)."""

    model_config = SettingsConfigDict(env_prefix="MERLIN_ACCESS_", extra="ignore")

    write_api_user: str = Field(default="merlin-write-api", description="The write API's user on the broker.")
    write_api_password: SecretStr | None = Field(default=None, description="Its password.")
    read_api_user: str = Field(default="merlin-read-api", description="The read API's user on the broker.")
    read_api_password: SecretStr | None = Field(default=None, description="Its password.")
    forwarder_user: str = Field(default="merlin-forwarder", description="The forwarders' user on the broker.")
    forwarder_password: SecretStr | None = Field(default=None, description="Its password.")
    admin_api_user: str = Field(default="merlin-admin-api", description="The admin API's user on the broker.")
    admin_api_password: SecretStr | None = Field(default=None, description="Its password.")

    def users(self) -> dict[str, str]:
        """The user of each service, by service."""
        return {service: str(getattr(self, f"{service}_user")) for service in _SERVICES}

    def passwords(self) -> dict[str, str]:
        """The password of each service's user, by user; an error naming those missing."""
        missing = [
            f"MERLIN_ACCESS_{service.upper()}_PASSWORD"
            for service in _SERVICES
            if getattr(self, f"{service}_password") is None
        ]
        if missing:
            raise MerlinError(f"set {', '.join(missing)}")
        return {
            str(getattr(self, f"{service}_user")): getattr(self, f"{service}_password").get_secret_value()
            for service in _SERVICES
        }


@dataclass(frozen=True, order=True)
class Grant:
    """One ALLOW rule: ``user`` may do ``operation`` on the ``kind`` named ``name`` (or prefixed by it)."""

    user: str
    kind: str  # "topic" | "group"
    name: str
    operation: str  # an AclOperation's name
    prefixed: bool = False

    def binding(self) -> AclBinding:
        return AclBinding(
            ResourceType.TOPIC if self.kind == "topic" else ResourceType.GROUP,
            self.name,
            ResourcePatternType.PREFIXED if self.prefixed else ResourcePatternType.LITERAL,
            f"User:{self.user}",
            "*",
            AclOperation[self.operation],
            AclPermissionType.ALLOW,
        )

    def describe(self) -> str:
        pattern = f"{self.name}*" if self.prefixed else self.name
        return f"{self.user}: {self.operation} on {self.kind} {pattern}"


def grants(kafka: KafkaSettings, forwarder_group: str, users: dict[str, str]) -> list[Grant]:
    """What each service needs of the broker, and nothing more."""
    events, dead, settings = kafka.events_topic, kafka.dead_letter_topic, kafka.settings_topic
    writer, reader, forwarder, admin = (users[s] for s in _SERVICES)

    def topic(user: str, name: str, *operations: str) -> list[Grant]:
        return [Grant(user, "topic", name, operation) for operation in operations]

    def group(user: str, name: str, *operations: str, prefixed: bool = False) -> list[Grant]:
        return [Grant(user, "group", name, operation, prefixed) for operation in operations]

    return sorted(
        [
            # Appends events (idempotently: WRITE on a topic implies the producer id).
            *topic(writer, events, "WRITE", "DESCRIBE"),
            # Reads the log's ends for after_position, and the log itself for live rooms (decision 0025):
            # every partition assigned, in no group.
            *topic(reader, events, "READ", "DESCRIBE"),
            # Consumes the events in its groups (and sets their session and heartbeat), dead-letters,
            # follows the settings and writes its reports and the endpoints it is given there.
            *topic(forwarder, events, "READ", "DESCRIBE"),
            *topic(forwarder, dead, "WRITE", "DESCRIBE"),
            *topic(forwarder, settings, "READ", "WRITE", "DESCRIBE"),
            *group(forwarder, forwarder_group, "READ", "ALTER_CONFIGS", prefixed=True),
            *group(forwarder, f"{settings}.reader", "READ"),
            # Reports and moves the endpoints' groups, reads dead letters to replay, writes controls.
            *topic(admin, events, "READ", "DESCRIBE"),
            *topic(admin, dead, "READ", "DESCRIBE"),
            *topic(admin, settings, "READ", "WRITE", "DESCRIBE"),
            *group(admin, endpoint_group(forwarder_group, ""), "READ", "DESCRIBE", prefixed=True),
            *group(admin, f"{settings}.reader", "READ"),
            *group(admin, f"{events}.admin-reader", "READ"),
            *group(admin, f"{dead}.replay", "READ"),
        ]
    )


@dataclass(frozen=True)
class Applied:
    users: list[str]
    granted: list[Grant]
    revoked: list[str]


async def apply(kafka: KafkaSettings, access: AccessSettings, forwarder_group: str) -> Applied:
    """Set each service user's password and make its ACLs exactly ``grants``."""
    passwords = access.passwords()
    wanted = grants(kafka, forwarder_group, access.users())
    admin = AdminClient(kafka.client())
    upserts: list[UserScramCredentialAlteration] = [
        UserScramCredentialUpsertion(
            user, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, _ITERATIONS), password.encode()
        )
        for user, password in passwords.items()
    ]
    await _all(admin.alter_user_scram_credentials(upserts, request_timeout=_TIMEOUT).values(), "users")
    await _all(admin.create_acls([g.binding() for g in wanted], request_timeout=_TIMEOUT).values(), "ACLs")
    revoked = await _revoke_others(admin, passwords, {g.binding() for g in wanted})
    return Applied(sorted(passwords), wanted, revoked)


async def _revoke_others(admin: AdminClient, users: Iterable[str], wanted: set[AclBinding]) -> list[str]:
    """Delete the ACLs of these users that are no longer wanted (a renamed topic or group)."""
    anything: Any = None  # any name, any host (the stubs want a str)
    filters = [
        AclBindingFilter(
            ResourceType.ANY,
            anything,
            ResourcePatternType.ANY,
            f"User:{user}",
            anything,
            AclOperation.ANY,
            AclPermissionType.ANY,
        )
        for user in users
    ]
    found: list[AclBinding] = []
    for lookup in filters:
        found.extend(await _one(admin.describe_acls(lookup, request_timeout=_TIMEOUT), "ACLs"))
    stale = [binding for binding in found if binding not in wanted]
    if stale:
        exactly = [_matching(binding) for binding in stale]
        await _all(admin.delete_acls(exactly, request_timeout=_TIMEOUT).values(), "ACLs")
    return sorted(_described(binding) for binding in stale)


def _matching(b: AclBinding) -> AclBindingFilter:
    """The filter that matches ``b`` alone (deleting takes filters)."""
    return AclBindingFilter(
        b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation, b.permission_type
    )


def _described(binding: AclBinding) -> str:
    operation, kind = cast(AclOperation, binding.operation), cast(ResourceType, binding.restype)
    return f"{binding.principal}: {operation.name} on {kind.name.lower()} {binding.name}"


async def _one(future: Future[Any], what: str) -> Any:
    return await answer(future, f"setting the services' {what}", _TIMEOUT)


async def _all(futures: Iterable[Future[Any]], what: str) -> None:
    for future in futures:
        await _one(future, what)


def _apply(_options: argparse.Namespace) -> int:
    applied = asyncio.run(apply(KafkaSettings(), AccessSettings(), ForwarderSettings().group_id))
    print(f"acls: SCRAM-SHA-512 passwords set for {', '.join(applied.users)}")
    for grant in applied.granted:
        print(f"acls: allow {grant.describe()}")
    for gone in applied.revoked:
        print(f"acls: revoked {gone}")
    return 0


def add_acls_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``merlin acls apply``."""
    acls = commands.add_parser(
        "acls",
        help="the services' Kafka users (SASL/SCRAM) and ACLs; run as a super user",
        description="Create or update each service's SCRAM-SHA-512 user (MERLIN_ACCESS_*_USER and "
        "_PASSWORD) and make its ACLs exactly what it needs. Connects with MERLIN_KAFKA_*.",
    )
    acls.add_argument("action", choices=["apply"])
    acls.set_defaults(handler=_apply)
