"""Every setting merlin reads, in one place: its settings classes, which of them each service reads,
and the few variables read without one.

``merlin`` refuses to run with a ``MERLIN_*`` variable that is none of these (decision 0020): a
misspelt setting would otherwise leave its default in force without a word.

This module imports the settings modules and nothing heavier, as every command loads it.
"""

from __future__ import annotations

import difflib
import os
import re
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource

from admin_api.settings import AdminApiSettings
from forwarder.settings import ForwarderSettings
from kernel.auth import AuthSettings
from kernel.http.edge_settings import EdgeSettings
from kernel.http.rate_limit import RateLimitSettings
from kernel.settings import KafkaSettings, LoggingSettings
from merlin.kafka_access import AccessSettings
from merlin.local.settings import DevSettings, LocalSettings
from read_api.settings import ReadApiSettings
from read_store.settings import ReadStoreSettings
from webhooks.settings import EndpointsSettings
from write_api.settings import WriteApiSettings

PREFIX = "MERLIN_"
MASK = "**********"

# In the order the settings reference shows them.
SETTINGS: tuple[type[BaseSettings], ...] = (
    KafkaSettings,
    ReadStoreSettings,
    WriteApiSettings,
    ReadApiSettings,
    AdminApiSettings,
    ForwarderSettings,
    EndpointsSettings,
    AuthSettings,
    RateLimitSettings,
    EdgeSettings,
    LoggingSettings,
    AccessSettings,
    LocalSettings,
    DevSettings,
)

_WRITE_API = (WriteApiSettings, KafkaSettings, AuthSettings, RateLimitSettings, EdgeSettings, LoggingSettings)
_READ_API = (
    ReadApiSettings, ReadStoreSettings, KafkaSettings, AuthSettings, RateLimitSettings, EdgeSettings,
    LoggingSettings,
)  # fmt: skip
_ADMIN_API = (AdminApiSettings, KafkaSettings, AuthSettings, EndpointsSettings, EdgeSettings, LoggingSettings)
_FORWARDER = (ForwarderSettings, KafkaSettings, ReadStoreSettings, EndpointsSettings, LoggingSettings)

# What each service reads, so that a bad value of any is refused before it starts: a forwarder's
# parent would otherwise start children that fail one after the other, restarted for ever.
READ_BY: dict[str, tuple[type[BaseSettings], ...]] = {
    "write-api": _WRITE_API,
    "read-api": _READ_API,
    "admin-api": _ADMIN_API,
    "forwarder": _FORWARDER,
    "dev": tuple(
        dict.fromkeys((LocalSettings, DevSettings, *_WRITE_API, *_READ_API, *_ADMIN_API, *_FORWARDER))
    ),
    "all": SETTINGS,
}


@dataclass(frozen=True)
class Direct:
    """A variable read with ``os.environ``, not through a settings class."""

    name: str
    default: str
    description: str


DIRECT = (
    Direct(
        "MERLIN_ADMIN_URL",
        "`http://$MERLIN_ADMIN_API_HOST:$MERLIN_ADMIN_API_PORT`",
        "Where `merlin endpoints` calls the admin API.",
    ),
    Direct(
        "MERLIN_LOCAL_SERVICES_FORKED",
        "unset (`1` in the tests)",
        "Tests only: `1` starts the services of `merlin.local.service_processes` as children of a fork "
        "server that imported merlin once, `0` as fresh interpreters; never passed on to a service.",
    ),
)


@dataclass(frozen=True)
class Variable:
    """The environment variable of one field of a settings class."""

    name: str
    settings: type[BaseSettings]
    field: str
    info: FieldInfo

    @property
    def is_json(self) -> bool:
        """Whether its value is written as JSON (a list or an object)."""
        return _container(self.info.annotation) is not None

    @property
    def secret(self) -> bool:
        """Whether its value must never be shown."""
        return is_secret_name(self.name) or _mentions(self.info.annotation, SecretStr)


def variables(settings: type[BaseSettings]) -> list[Variable]:
    """The variables of ``settings``: one a field, or one an alias of a field with alias choices."""
    # The names pydantic-settings itself looks up, prefix and field or each alias: no second reading
    # of its rules to drift from them.
    source = EnvSettingsSource(settings)
    return [
        Variable(env_name.upper(), settings, name, info)
        for name, info in settings.model_fields.items()
        for _key, env_name, _complex in source._extract_field_info(info, name)
    ]


def known_names() -> frozenset[str]:
    """Every ``MERLIN_*`` variable merlin reads."""
    return frozenset(
        {variable.name for settings in SETTINGS for variable in variables(settings)}
        | {direct.name for direct in DIRECT}
    )


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """A line for each ``MERLIN_*`` variable of ``environ`` merlin does not read, with the closest name
    it does. Names are compared in capitals, as pydantic-settings reads them in any case."""
    known = known_names()
    # Matched without the prefix they all share, which would make any two names look alike.
    endings = {name.removeprefix(PREFIX): name for name in known}
    lines = []
    for given in sorted(environ):
        name = given.upper()
        if not name.startswith(PREFIX) or name in known:
            continue
        close = difflib.get_close_matches(name.removeprefix(PREFIX), endings, n=1)
        hint = f"; did you mean {endings[close[0]]}?" if close else " (docs/settings.md lists them)"
        lines.append(f"{given} is not a setting merlin knows{hint}")
    return lines


def undecodable(settings: Iterable[type[BaseSettings]]) -> list[str]:
    """A line for each variable of ``settings`` in the environment whose JSON (a list's or an object's)
    does not parse.

    pydantic-settings raises its ``SettingsError`` for the first it meets, naming the field but not
    the class; its own source is asked here of each field in turn.
    """
    lines = []
    for each in settings:
        source = EnvSettingsSource(each)
        for variable in variables(each):
            value, _key, is_complex = source.get_field_value(variable.info, variable.field)
            try:
                source.prepare_field_value(variable.field, variable.info, value, is_complex)
            except ValueError as exc:
                given = next((name for name in os.environ if name.upper() == variable.name), variable.name)
                kind = "a JSON list" if _container(variable.info.annotation) is list else "a JSON object"
                lines.append(f"{given}: not {kind} ({exc})")
    return list(dict.fromkeys(lines))  # a variable two classes read is one mistake


@dataclass(frozen=True)
class Setting:
    """One setting in force: its variable, its value (a secret masked) and where the value came from."""

    variable: str
    value: object  # as JSON has it
    source: Literal["environment", "default"]
    settings: str  # the class that reads it


def in_force(settings: type[BaseSettings]) -> list[Setting]:
    """``settings`` as the environment makes them, a setting of several names under the one given."""
    current = settings()
    values = current.model_dump(mode="json")
    given = {name.upper() for name in os.environ}
    shown: dict[str, Setting] = {}
    for variable in variables(settings):
        if variable.field in shown and variable.name not in given:
            continue
        value = values[variable.field]
        if variable.secret and value not in (None, ""):
            value = MASK
        source: Literal["environment", "default"] = (
            "environment" if variable.field in current.model_fields_set else "default"
        )
        shown[variable.field] = Setting(variable.name, masked(value), source, settings.__name__)
    return list(shown.values())


def masked(value: object) -> object:
    """``value`` with the secrets it holds masked: a JSON object's entries named like one (librdkafka's
    ``ssl.key.password``), and a URL's password."""
    if isinstance(value, dict):
        return {key: MASK if is_secret_name(key) else masked(item) for key, item in value.items()}
    if isinstance(value, list):
        return [masked(item) for item in value]
    if isinstance(value, str) and "://" in value:
        return _without_password(value)
    return value


# A database URL's password as SQLAlchemy reads one: anything up to the "@", "/", "?" and "#" included,
# which a general URL parser (urllib's) would take for the path, the query or the fragment.
_USERINFO = re.compile(r"^(?P<start>[\w+.-]+://[^:/@?#]*:)(?P<password>[^@]*)@")


def _without_password(url: str) -> str:
    """``url`` with the password of its user and every query parameter named like a secret masked."""
    shown = _USERINFO.sub(lambda found: f"{found['start']}{MASK}@", url, count=1)
    head, mark, query = shown.partition("?")
    if not mark:
        return shown
    pairs = [pair.partition("=") for pair in query.split("&")]
    return (
        head
        + "?"
        + "&".join(
            f"{key}{equals}{MASK if is_secret_name(key) and equals else value}"
            for key, equals, value in pairs
        )
    )


def is_secret_name(name: str) -> bool:
    """Whether ``name`` (a variable's, or a key's in a JSON object) says it holds a secret."""
    return any(word in name.upper() for word in ("SECRET", "TOKEN", "PASSWORD", "KEY"))


def _container(annotation: object) -> type | None:
    """``list`` or ``dict`` if ``annotation`` is one (or one or None), else None."""
    origin = typing.get_origin(annotation)
    if origin in (list, dict):
        return typing.cast(type, origin)
    if origin is not None:
        found = [_container(argument) for argument in typing.get_args(annotation)]
        return next((kind for kind in found if kind is not None), None)
    return None


def _mentions(annotation: object, kind: type) -> bool:
    if annotation is kind:
        return True
    return any(_mentions(argument, kind) for argument in typing.get_args(annotation))
