"""Live tickets: what a browser's EventSource, which sends no header, opens a live stream with
(decision 0025).

A ticket is issued for a bearer token (``messages:read``) and some of its rooms, and is accepted as
``?ticket=`` on the live routes only, once, for ``live_ticket_seconds``: so no long-lived token is ever
put in a URL. It is signed (HMAC-SHA256) and carries its own expiry, its caller, its rooms and its
token's expiry, so any process holding the key can check it without asking another; each process
remembers the tickets it accepted until they expire, so a ticket opens at most one stream per process.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl

import orjson
import structlog
from pydantic import SecretStr
from starlette.types import Scope

from kernel.auth import READ, Caller

log = structlog.get_logger()

# The routes a ticket opens, and no other: a ticket is never a way into the rest of the API.
LIVE_PATH = re.compile(r"/v1/live|/v1/rooms/[^/]+/live")
_MAX_TICKET = 16_384


class Tickets:
    """Issues tickets and accepts each once in this process."""

    def __init__(self, key: bytes, seconds: int) -> None:
        self._key = key
        self.seconds = seconds
        # Nonce -> the ticket's expiry: what this process accepted and must not accept again.
        self._used: dict[str, float] = {}
        # Told of each ticket presented: "accepted" or "refused" (the metrics).
        self.presented: Callable[[str], None] = lambda _outcome: None

    @classmethod
    def keyed(cls, key: SecretStr | None, jwt_secret: SecretStr | None, seconds: int) -> Tickets:
        """Tickets signed with ``key``; without it, with a key derived from the callers' shared JWT
        secret (every process verifying the same tokens accepts them); without either, with a key of
        this process's own (a ticket opens streams at the process that issued it only)."""
        if key is not None:
            material = key.get_secret_value().encode()
        elif jwt_secret is not None:
            material = hmac.digest(jwt_secret.get_secret_value().encode(), b"merlin live tickets", "sha256")
        else:
            log.warning(
                "live_tickets_per_process",
                reason="neither MERLIN_READ_API_LIVE_TICKET_KEY nor MERLIN_AUTH_JWT_SECRET is set: a ticket "
                "opens a stream only at the process that issued it",
            )
            material = secrets.token_bytes(32)
        return cls(hashlib.sha256(material).digest(), seconds)

    def issue(self, caller: Caller, rooms: list[str]) -> str:
        """A ticket for ``caller`` to stream ``rooms`` (already checked against its token)."""
        now = time.time()
        claims = {
            "sub": caller.subject,
            "rooms": rooms,
            "exp": now + self.seconds,
            "token_exp": caller.expires,
            "nonce": secrets.token_urlsafe(16),
        }
        body = _b64(orjson.dumps(claims))
        return f"{body}.{_b64(self._sign(body))}"

    def accept(self, ticket: str) -> Caller | None:
        """The caller ``ticket`` stands for, once; None when it is not one, expired, or used here."""
        body, dot, signature = ticket.partition(".")
        if not dot or len(ticket) > _MAX_TICKET:
            return None
        try:
            given = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
            if not hmac.compare_digest(given, self._sign(body)):
                return None
            claims: dict[str, Any] = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        except (binascii.Error, ValueError):
            return None
        now = time.time()
        expires, nonce = claims["exp"], claims["nonce"]
        token_expires = claims["token_exp"]
        if expires <= now or (token_expires is not None and token_expires <= now) or nonce in self._used:
            return None
        self._forget_expired(now)
        self._used[nonce] = expires
        return Caller(claims["sub"], frozenset({READ}), frozenset(claims["rooms"]), token_expires)

    def caller(self, scope: Scope) -> Caller | None:
        """The caller of a live route's ``?ticket=``; None for any other request or ticket."""
        if LIVE_PATH.fullmatch(scope["path"]) is None:
            return None
        for name, value in _query(scope):
            if name == "ticket":
                caller = self.accept(value)
                self.presented("refused" if caller is None else "accepted")
                return caller
        return None

    def _sign(self, body: str) -> bytes:
        return hmac.digest(self._key, body.encode(), "sha256")

    def _forget_expired(self, now: float) -> None:
        if len(self._used) > 1000:
            self._used = {nonce: at for nonce, at in self._used.items() if at > now}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _query(scope: Scope) -> list[tuple[str, str]]:
    return parse_qsl(scope.get("query_string", b"").decode("latin-1"))
