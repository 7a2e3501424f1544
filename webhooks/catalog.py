"""Endpoint definitions in the settings topic: ``endpoint/<name>`` holds a versioned definition, a tombstone
deletes it.

A record: ``{"schema": 2, "version": n, "added_at", "updated_at", "definition": {...},
"url": {"sealed", "fingerprint"}, "secrets": [{"sealed", "fingerprint", "until"?}, ...]}``:
the definition without name or secrets, its URL as it may be shown (without credentials
or query, either of which may be a secret); the whole URL sealed; the current secret
first, then those still signing in a rotation's grace period, each sealed
(``webhooks.secret_box``). Schema 1 records (the URL in the clear in the definition)
are read as well, and ``resealed`` writes them as schema 2.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, ValidationError

from domain.envelope import format_time
from domain.errors import MerlinError
from webhooks.endpoints import Endpoint, EndpointPolicy, EndpointSpec, OldSecret, shown_url
from webhooks.secret_box import SecretBox, fingerprint

ENDPOINT = "endpoint"
SCHEMA = 2
_READ_SCHEMAS = (1, 2)
_NOT_DEFINITION = {"name", "secret", "old_secrets", "added_at"}


class DefinitionUnreadable(MerlinError, ValueError):
    """A record of the settings topic that is no endpoint definition this version reads."""


class _Shape(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class _Sealed(_Shape):
    sealed: str
    fingerprint: str


class _SealedSecret(_Sealed):
    until: str | None = None


class _Definition(_Shape):
    url: str


class _Stored(_Shape):
    """What every endpoint record holds, whatever its schema: a record without it is no definition."""

    schema_: int = Field(alias="schema")
    version: int = Field(ge=1, le=2**53)  # each change adds one: kept exact in any JSON reader
    added_at: str
    updated_at: str
    definition: _Definition
    url: _Sealed | None = None
    secrets: list[_SealedSecret] = Field(min_length=1)


def check_record(record: dict[str, Any]) -> None:
    """Raise ValueError unless ``record`` has an endpoint record's shape (``kernel.control``'s check)."""
    _Stored.model_validate(record)


def encode(endpoint: Endpoint, box: SecretBox, version: int, now: datetime) -> dict[str, Any]:
    """The settings-topic record of ``endpoint`` at ``version``."""
    url = str(endpoint.url)
    return {
        "schema": SCHEMA,
        "version": version,
        "added_at": format_time(endpoint.added_at or now),
        "updated_at": format_time(now),
        "definition": {
            **endpoint.model_dump(mode="json", exclude=_NOT_DEFINITION),
            "url": endpoint.shown_url,
        },
        "url": {"sealed": box.seal(url), "fingerprint": fingerprint(url)},
        "secrets": [
            {"sealed": box.seal(endpoint.secret), "fingerprint": fingerprint(endpoint.secret)},
            *(
                {"sealed": box.seal(old.secret), "fingerprint": fingerprint(old.secret),
                 "until": format_time(old.until)}
                for old in endpoint.old_secrets
            ),
        ],
    }  # fmt: skip


def decode(name: str, record: dict[str, Any], box: SecretBox) -> Endpoint:
    """The endpoint ``record`` defines: DefinitionUnreadable if none, SecretUnreadable if no key opens it."""
    schema = record.get("schema")
    if schema not in _READ_SCHEMAS:
        raise DefinitionUnreadable(f"endpoint {name}: schema {schema!r}, not one of {_READ_SCHEMAS}")
    try:
        current, *older = record["secrets"]
        url = box.open(record["url"]["sealed"]) if schema == 2 else record["definition"]["url"]
        return Endpoint.model_validate(
            {
                **record["definition"],
                "url": url,
                "name": name,
                "secret": box.open(current["sealed"]),
                "old_secrets": [
                    OldSecret(secret=box.open(old["sealed"]), until=old["until"]) for old in older
                ],
                "added_at": record["added_at"],
            }
        )
    except (KeyError, TypeError, AttributeError, ValueError, ValidationError) as exc:
        raise DefinitionUnreadable(f"endpoint {name}: {type(exc).__name__}") from None


def resealed(record: dict[str, Any], box: SecretBox) -> dict[str, Any]:
    """``record`` with every secret sealed again under the first key (same definition, same version);
    a schema 1 record's URL sealed as well, out of the clear."""
    if record.get("schema") == 1:
        url = record["definition"]["url"]
        record = {
            **record,
            "schema": SCHEMA,
            "definition": {**record["definition"], "url": shown_url(HttpUrl(url))},
            "url": {"sealed": box.seal(url), "fingerprint": fingerprint(url)},
        }
    else:
        record = {**record, "url": {**record["url"], "sealed": box.reseal(record["url"]["sealed"])}}
    return {
        **record,
        "secrets": [{**entry, "sealed": box.reseal(entry["sealed"])} for entry in record["secrets"]],
    }


def shown(name: str, record: dict[str, Any]) -> dict[str, Any]:
    """What the admin API shows of a record: all but the secrets, which it names by fingerprint."""
    current, *older = record["secrets"]
    definition = record["definition"]
    sealed_url = record.get("url")
    return {
        "name": name,
        **definition,
        # Credentials and a query may hold secrets: shown without them, compared by fingerprint.
        "url": definition["url"] if sealed_url else _shown(definition["url"]),
        "url_fingerprint": sealed_url["fingerprint"] if sealed_url else fingerprint(definition["url"]),
        "event_types": sorted(definition.get("event_types") or []),
        "version": record["version"],
        "added_at": record["added_at"],
        "updated_at": record["updated_at"],
        "secret": {"fingerprint": current["fingerprint"]},
        "old_secrets": [{"fingerprint": old["fingerprint"], "until": old["until"]} for old in older],
    }


def _shown(url: str) -> str:
    try:
        return shown_url(HttpUrl(url))
    except ValidationError:
        return "(not a URL)"


class SecretRequired(MerlinError, ValueError):
    """A new endpoint given without a secret."""


def merged(name: str, spec: EndpointSpec, current: Endpoint | None, now: datetime) -> Endpoint:
    """``current`` redefined by ``spec``: a secret left out is kept; a new one keeps the old one signing
    for ``spec.secret_grace_seconds``; secrets past their grace period are dropped."""
    if spec.secret is None and current is None:
        raise SecretRequired("a new endpoint needs a secret")
    secret = spec.secret or (current.secret if current else "")
    old = list(current.old_secrets) if current else []
    if current is not None and secret != current.secret and spec.secret_grace_seconds > 0:
        old.insert(
            0, OldSecret(secret=current.secret, until=now + timedelta(seconds=spec.secret_grace_seconds))
        )
    return Endpoint.model_validate(
        {
            **spec.model_dump(exclude={"secret", "secret_grace_seconds"}),
            "name": name,
            "secret": secret,
            "old_secrets": [o for o in old if o.until > now and o.secret != secret],
            "added_at": current.added_at if current else now,
        }
    )


_POLICY = tuple(EndpointPolicy.model_fields)


def _normal(fields: dict[str, Any]) -> dict[str, Any]:
    return {**fields, "event_types": sorted(fields.get("event_types") or [])}


def comparable(endpoint: Endpoint) -> dict[str, Any]:
    """What two definitions are compared by: the policy as JSON, the secret by fingerprint."""
    policy = endpoint.model_dump(mode="json", include=set(_POLICY))
    return _normal({**policy, "url": fingerprint(policy["url"]), "secret": fingerprint(endpoint.secret)})


def comparable_view(view: dict[str, Any]) -> dict[str, Any]:
    """``comparable`` of an endpoint as the admin API shows it (``shown``)."""
    policy = {name: view.get(name) for name in _POLICY}
    return _normal({**policy, "url": view["url_fingerprint"], "secret": view["secret"]["fingerprint"]})


def changed_fields(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The fields of two ``comparable`` definitions that differ."""
    return sorted(name for name in a.keys() | b.keys() if a.get(name) != b.get(name))


@dataclass
class Plan:
    """What making the topic match a set of definitions takes."""

    create: list[str] = field(default_factory=list)
    update: dict[str, list[str]] = field(default_factory=dict)  # name → the fields that change
    delete: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [
            *(f"+ {name}" for name in self.create),
            *(f"~ {name}: {', '.join(fields)}" for name, fields in self.update.items()),
            *(f"- {name}" for name in self.delete),
        ]


def plan(current: dict[str, dict[str, Any]], wanted: dict[str, dict[str, Any]], deletes: bool = True) -> Plan:
    """How ``current`` becomes ``wanted`` (both ``comparable``, by name); without ``deletes``,
    endpoints only in ``current`` stay."""
    result = Plan()
    for name, definition in sorted(wanted.items()):
        now = current.get(name)
        if now is None:
            result.create.append(name)
        elif changed := changed_fields(now, definition):
            result.update[name] = changed
        else:
            result.unchanged.append(name)
    if deletes:
        result.delete = sorted(set(current) - set(wanted))
    return result
