"""Downstream endpoints, from a TOML or YAML file (``MERLIN_ENDPOINTS_FILE``).

```toml
[[endpoints]]
name = "search-indexer"
url = "http://127.0.0.1:9000/hooks/messages"
event_types = ["MessageCreated", "MessageUpdated"]
timeout = 5.0
max_in_flight = 64
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
on_failure = "dead-letter"      # or "block": the room waits for an operator
since = 2026-11-24T00:00:00Z    # deliver events written from then on (default: from when first run)
disable_after_seconds = 432000  # failing this long without one success: disabled (default: never)
[endpoints.retry]
max_attempts = 8
max_elapsed = 120.0
base = 0.2
cap = 30.0
```
"""

from __future__ import annotations

import base64
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Literal

import yaml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, HttpUrl, ValidationError, field_validator
from standardwebhooks import Webhook

from domain import EVENT_TYPES, EventType
from kernel.errors import InfrastructureError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


def endpoint_group(forwarder_group: str, endpoint: str) -> str:
    """The consumer group of ``endpoint``'s flow: committed offsets of its own, beside the projection's
    group ``forwarder_group``. With ``endpoint`` empty, the prefix every endpoint's group starts with."""
    return f"{forwarder_group}.endpoint.{endpoint}"


MAX_BUFFER = 100_000


class RetryPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_attempts: int | None = Field(default=10, ge=1)
    max_elapsed: float | None = Field(default=300.0, gt=0)
    base: float = Field(default=0.2, gt=0)
    cap: float = Field(default=30.0, gt=0)


class OldSecret(BaseModel):
    """A secret replaced by a newer one, still signing until ``until`` so receivers switch without a gap."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    secret: str
    until: AwareDatetime


def _usable_secret(secret: str) -> str:
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except ValueError as exc:
        raise ValueError("must be a Standard Webhooks secret: whsec_ followed by base64") from exc
    if len(key) < 16:
        raise ValueError("must be a Standard Webhooks secret of at least 16 bytes")
    Webhook(secret)
    return secret


class EndpointPolicy(BaseModel):
    """Where and how an endpoint is called: everything of its definition but its name and secrets."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: HttpUrl
    event_types: frozenset[EventType] = frozenset(EVENT_TYPES)
    timeout: float = Field(default=5.0, gt=0)
    retry: RetryPolicy = RetryPolicy()
    max_in_flight: int = Field(default=32, ge=1, le=10_000)
    # Events buffered for this endpoint before its partitions are paused: what bounds its memory, so
    # bounded itself (100,000 events of 4,000 characters are up to 1.6 GB).
    buffer: int = Field(default=20_000, ge=1, le=MAX_BUFFER)
    on_failure: Literal["dead-letter", "block"] = "dead-letter"
    # Events written from this time on are delivered; unset, from when the endpoint was added.
    since: AwareDatetime | None = None
    # Failing this long without one delivery succeeding disables the endpoint (paused, with the
    # reason) until an operator resumes it; unset, never.
    disable_after_seconds: float | None = Field(default=None, gt=0)


class EndpointSpec(EndpointPolicy):
    """An endpoint as an operator gives it (``PUT``): the secret may be left out to keep the one stored."""

    secret: str | None = Field(default=None, min_length=8)
    # A new secret's predecessor still signs for this long, so receivers switch without a gap.
    secret_grace_seconds: float = Field(default=86_400.0, ge=0, le=30 * 86_400)

    @field_validator("secret")
    @classmethod
    def _usable(cls, secret: str | None) -> str | None:
        return None if secret is None else _usable_secret(secret)


class Endpoint(EndpointPolicy):
    """An endpoint as the forwarder runs it."""

    name: str = Field(pattern=NAME_PATTERN)
    secret: str = Field(min_length=8, description="Standard Webhooks secret, e.g. whsec_<base64>")
    # Kept by the settings topic only (a rotation's grace period), never given by a file or a request.
    old_secrets: tuple[OldSecret, ...] = ()
    # When the endpoint was first defined (settings topic): where it starts without ``since``.
    added_at: AwareDatetime | None = None

    @field_validator("secret")
    @classmethod
    def _usable(cls, secret: str) -> str:
        return _usable_secret(secret)

    def signing_secrets(self, now: datetime) -> list[str]:
        """The secrets each call is signed with: the current one, then those still in their grace period."""
        return [self.secret, *(old.secret for old in self.old_secrets if old.until > now)]

    @property
    def shown_url(self) -> str:
        """The URL without credentials or query (either may hold a secret), fit to show or record."""
        return shown_url(self.url)


def shown_url(url: HttpUrl) -> str:
    """``url`` without credentials or query (either may hold a secret), fit to show or record."""
    default = {"http": 80, "https": 443}.get(url.scheme)
    port = f":{url.port}" if url.port and url.port != default else ""
    shown = f"{url.scheme}://{url.host}{port}{url.path or ''}"
    return shown + ("?…" if url.query else "")


class NamedSpec(EndpointSpec):
    """An endpoint as a file gives it: named, with its secret."""

    name: str = Field(pattern=NAME_PATTERN)
    secret: str = Field(min_length=8)

    def endpoint(self) -> Endpoint:
        return Endpoint.model_validate(self.model_dump(exclude={"secret_grace_seconds"}))


class EndpointsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    endpoints: list[NamedSpec] = []


def _without_values(exc: ValidationError) -> str:
    """What is wrong and where, never the value given (it may be a secret or a URL with one)."""
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
        for error in exc.errors(include_url=False, include_input=False)
    )


def load_endpoints(path: Path | None) -> list[Endpoint]:
    """The endpoints in ``path`` (TOML or YAML), or none without a file."""
    return [] if path is None else [spec.endpoint() for spec in load_specs(path)]


def load_specs(path: Path) -> list[NamedSpec]:
    """The endpoint definitions in ``path`` (TOML or YAML), as given."""
    try:
        text = path.read_text()
        raw = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
        specs = EndpointsFile.model_validate(raw or {}).endpoints
    except ValidationError as exc:
        raise InfrastructureError(f"endpoints file {path}: {_without_values(exc)}") from None
    except yaml.YAMLError as exc:  # its message quotes the offending text, which may be a secret
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise InfrastructureError(f"endpoints file {path}: not valid YAML{where}") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InfrastructureError(f"endpoints file {path}: {exc}") from exc
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise InfrastructureError(f"endpoints file {path}: endpoint names must be unique")
    return specs
