"""Who is calling: bearer JWTs verified with PyJWT, against a shared secret or a JWKS URL.

- ``MERLIN_AUTH_JWT_SECRET``: HS256 with a shared secret (development, tests,
  ``merlin token``). Only HS256 is accepted then.
- ``MERLIN_AUTH_JWKS_URL``: public keys (RS256, ES256, EdDSA) fetched over
  HTTP, cached, and fetched again when a token names an unknown ``kid`` (at
  most once per ``jwks_refresh_seconds``, so unknown kids cannot make us
  hammer the key server). A token's ``alg`` must be the one its key is for.

Either way ``exp``, ``sub``, ``aud`` and ``iss`` are required and checked,
with a small leeway for clocks. ``alg: none`` and algorithm confusion (an
HS256 token signed with a public key) are refused because the accepted
algorithms are fixed by the configuration, never taken from the token.

Claims: ``sub`` is the caller (a message's sender); ``scope`` is
space-separated (``messages:write messages:read admin``; U+0020 only, as RFC
6749 says); ``rooms`` lists the rooms the caller may use (``["*"]`` for all);
``exp`` is a number (not a string), at most ``max_token_lifetime_seconds``
away when that is set.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import structlog
from pydantic import Field, HttpUrl, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.errors import MerlinError
from kernel.errors import InfrastructureError

log = structlog.get_logger()

WRITE, READ, ADMIN = "messages:write", "messages:read", "admin"
SCOPES = (WRITE, READ, ADMIN)
ALL_ROOMS = "*"
_ASYMMETRIC = ("RS256", "ES256", "EdDSA")
_MIN_SECRET = 32


class AuthSettings(BaseSettings):
    """How callers are authenticated (``MERLIN_AUTH_*``): set the secret or the URL, or disable it."""

    model_config = SettingsConfigDict(env_prefix="MERLIN_AUTH_", extra="ignore")

    jwt_secret: SecretStr | None = Field(
        default=None,
        description="Verify callers' HS256 tokens with this shared secret, at least 32 characters "
        "(`merlin dev`: kept in `var/auth.secret`).",
    )
    jwks_url: HttpUrl | None = Field(
        default=None,
        description="Or verify RS256, ES256 and EdDSA tokens with the keys published at this URL.",
    )
    audience: str = Field(default="merlin", min_length=1, description="The `aud` every token must carry.")
    issuer: str = Field(default="merlin", min_length=1, description="The `iss` every token must carry.")
    leeway_seconds: float = Field(
        default=30.0, ge=0, le=300, description="Clock skew forgiven on a token's `exp`."
    )
    jwks_refresh_seconds: float = Field(
        default=30.0,
        ge=0,
        description="At most one fetch of the keys per this many seconds when a token names an unknown "
        "`kid`.",
    )
    max_token_lifetime_seconds: float | None = Field(
        default=None,
        gt=0,
        description="A token whose `exp` (a number, never a string) is further than this from now is "
        "refused; unset, any lifetime is accepted.",
    )
    disabled: bool = Field(
        default=False,
        description="No authentication, for deployments that authenticate at a gateway: every caller may "
        "do everything (logged loudly).",
    )

    @field_validator("jwt_secret", "jwks_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _one_way(self) -> AuthSettings:
        if self.jwt_secret is not None and len(self.jwt_secret.get_secret_value()) < _MIN_SECRET:
            raise ValueError(f"MERLIN_AUTH_JWT_SECRET must be at least {_MIN_SECRET} characters")
        if self.jwt_secret is not None and self.jwks_url is not None:
            raise ValueError("set MERLIN_AUTH_JWT_SECRET or MERLIN_AUTH_JWKS_URL, not both")
        return self

    @property
    def verifies(self) -> bool:
        """Whether tokens are verified (a key is set and authentication is not disabled)."""
        return (self.jwt_secret is not None or self.jwks_url is not None) and not self.disabled

    def require(self) -> AuthSettings:
        """These settings, if they say how to verify tokens (or that auth is disabled); else an error."""
        if not self.verifies and not self.disabled:
            raise InfrastructureError(
                "no way to authenticate callers: set MERLIN_AUTH_JWT_SECRET or MERLIN_AUTH_JWKS_URL"
                " (or MERLIN_AUTH_DISABLED=true behind a gateway that authenticates)"
            )
        return self


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: who, what it may do, and in which rooms."""

    subject: str
    scopes: frozenset[str]
    rooms: frozenset[str]
    # When the token stops being valid (Unix time, ``exp`` plus the leeway); None: never (no token).
    # A live stream ends then (decision 0025): a request is judged once, a stream for as long as it lasts.
    expires: float | None = field(default=None, compare=False)

    def may(self, scope: str) -> bool:
        return scope in self.scopes

    def may_use(self, room: str) -> bool:
        return ALL_ROOMS in self.rooms or room in self.rooms


# The caller when authentication is disabled: no subject, every right.
ANYONE = Caller("", frozenset(SCOPES), frozenset({ALL_ROOMS}))


class Unauthenticated(MerlinError):
    """The token is missing, malformed, expired, or not ours. The reason is for logs, never for clients."""


class Verifier:
    """Turns a bearer token into a ``Caller``, or raises ``Unauthenticated``.

    Tokens verified once are remembered until they expire (a bounded number of
    them): a client sends the same token with every request, and checking its
    signature each time cost about a tenth of a write.
    """

    def __init__(self, settings: AuthSettings, remembered: int = 10_000) -> None:
        self.settings = settings
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = -float("inf")
        self._fetching: asyncio.Lock | None = None
        self._verified: dict[str, tuple[Caller, float]] = {}
        self._remembered = remembered

    async def caller(self, token: str) -> Caller:
        known = self._verified.get(token)
        if known is not None:
            if time.time() < known[1]:
                return known[0]
            del self._verified[token]
        caller, expires = await self._verify(token)
        if len(self._verified) >= self._remembered:
            del self._verified[next(iter(self._verified))]  # the oldest
        self._verified[token] = (caller, expires)
        return caller

    async def _verify(self, token: str) -> tuple[Caller, float]:
        settings = self.settings
        try:
            if settings.jwt_secret is not None:
                key: Any = settings.jwt_secret.get_secret_value()
                algorithms = ["HS256"]
            else:
                header = jwt.get_unverified_header(token)
                algorithm, kid = header.get("alg"), header.get("kid")
                if algorithm not in _ASYMMETRIC or not isinstance(kid, str):
                    raise Unauthenticated(f"algorithm {algorithm!r} or key id {kid!r} not accepted")
                found = await self._key(kid)
                if found.algorithm_name != algorithm:
                    raise Unauthenticated(f"key {kid} is for {found.algorithm_name}, not {algorithm}")
                key, algorithms = found, [algorithm]
            claims = jwt.decode(
                token, key, algorithms=algorithms, audience=settings.audience, issuer=settings.issuer,
                leeway=settings.leeway_seconds, options={"require": ["exp", "sub", "aud", "iss"]},
            )  # fmt: skip
        except jwt.PyJWTError as exc:
            raise Unauthenticated(str(exc)) from exc
        expires = self._expiry(claims["exp"])
        return _caller(claims, expires + settings.leeway_seconds), expires

    def _expiry(self, exp: object) -> float:
        """``exp`` if it is a NumericDate (RFC 7519 §2: a number, which PyJWT would take as a string too)
        no further away than the maximum lifetime."""
        if isinstance(exp, bool) or not isinstance(exp, int | float):
            raise Unauthenticated("exp must be a number of seconds since the epoch")
        limit = self.settings.max_token_lifetime_seconds
        if limit is not None and exp - time.time() > limit + self.settings.leeway_seconds:
            raise Unauthenticated(
                f"the token lives longer than {limit:g} s (MERLIN_AUTH_MAX_TOKEN_LIFETIME_SECONDS)"
            )
        return float(exp)

    async def _key(self, kid: str) -> jwt.PyJWK:
        if (
            kid not in self._keys
            and time.monotonic() - self._fetched_at >= self.settings.jwks_refresh_seconds
        ):
            self._fetching = self._fetching or asyncio.Lock()
            async with self._fetching:
                if kid not in self._keys and time.monotonic() - self._fetched_at >= (
                    self.settings.jwks_refresh_seconds
                ):
                    await self._fetch()
        found = self._keys.get(kid)
        if found is None:
            raise Unauthenticated(f"unknown key id {kid}")
        return found

    async def _fetch(self) -> None:
        self._fetched_at = time.monotonic()
        url = str(self.settings.jwks_url)
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                answer = await client.get(url)
                answer.raise_for_status()
                keys = jwt.PyJWKSet.from_dict(answer.json()).keys
        except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
            log.warning("jwks_fetch_failed", url=url, error=str(exc))
            return  # keep the keys we had
        self._keys = {key.key_id: key for key in keys if key.key_id and key.algorithm_name in _ASYMMETRIC}
        log.info("jwks_fetched", url=url, keys=sorted(self._keys))


def _caller(claims: dict[str, Any], expires: float) -> Caller:
    subject, scope, rooms = claims.get("sub"), claims.get("scope", ""), claims.get("rooms", [])
    if not isinstance(subject, str) or not subject:
        raise Unauthenticated("sub must be a non-empty string")
    if not isinstance(scope, str):
        raise Unauthenticated("scope must be a space-separated string")
    if not isinstance(rooms, list) or not all(isinstance(room, str) for room in rooms):
        raise Unauthenticated("rooms must be a list of room ids")
    return Caller(subject, scope_tokens(scope), frozenset(rooms), expires)


def scope_tokens(scope: str) -> frozenset[str]:
    """The scope tokens of ``scope`` (RFC 6749 §3.3): separated by U+0020 alone, each of printable ASCII
    but ``"`` and ``\\``. A token of any other character grants nothing: ``read\u00a0admin`` is no
    ``admin``."""
    return frozenset(token for token in scope.split(" ") if _SCOPE_TOKEN.fullmatch(token))


_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


def mint(
    secret: str,
    subject: str,
    *,
    scopes: Iterable[str] = (WRITE, READ),
    rooms: Iterable[str] = (ALL_ROOMS,),
    ttl_seconds: float = 3600,
    audience: str = "merlin",
    issuer: str = "merlin",
) -> str:
    """An HS256 token for development and tests (``merlin token``)."""
    now = int(time.time())
    claims = {
        "sub": subject, "scope": " ".join(scopes), "rooms": list(rooms),
        "aud": audience, "iss": issuer, "iat": now, "exp": now + int(ttl_seconds),
    }  # fmt: skip
    return jwt.encode(claims, secret, algorithm="HS256")
