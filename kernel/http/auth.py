"""Authentication at every API's edge: a bearer token on every route but health, the caller in the scope.

An ASGI layer, not a FastAPI dependency, so that nothing (routing, body
parsing, the OpenAPI document) runs for a caller who is not authenticated. Routes then
ask ``authorize`` for the scope and room they need.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

import structlog
from fastapi import Request
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from kernel.auth import ADMIN, ALL_ROOMS, ANYONE, SCOPES, AuthSettings, Caller, Unauthenticated, Verifier
from kernel.http.explorer import ASSETS_PREFIX, PAGE_PATH
from kernel.http.rate_limit import RateLimiter, retry_after
from kernel.http.responses import problem

log = structlog.get_logger()

# The API's operations that need no token.
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
# Nor do the API explorer's page and assets, which are no operations of the API: a static shell that
# holds no data (decision 0023). ``/openapi.json``, which the explorer loads, needs a token.
EXPLORER_PATHS = frozenset({PAGE_PATH})
EXPLORER_PREFIXES = (ASSETS_PREFIX,)
# Operations' routes: for operators (the admin scope), not for a chat's users.
ADMIN_PATHS = frozenset({"/metrics", "/v1/projection"})
# Who holds the admin API's own token.
OPERATOR = Caller("operator", frozenset(SCOPES), frozenset({ALL_ROOMS}))


class Forbidden(HTTPException):
    """Authenticated, but the token does not allow this."""

    def __init__(self, detail: str) -> None:
        super().__init__(403, detail)


class Authenticate:
    """Refuse with 401 a request without a valid bearer token; 403 on an admin route without ``admin``."""

    def __init__(
        self,
        app: ASGIApp,
        verifier: Verifier | None,
        *,
        operator_token: str | None = None,
        admin_only: bool = False,
        limiter: RateLimiter | None = None,
        tickets: Callable[[Scope], Caller | None] | None = None,
    ) -> None:
        self.app = app
        # Who a request without a bearer token is, by a credential of its own (the read API's live
        # tickets, accepted on its live routes only); None: no one.
        self.tickets = tickets
        self.verifier = verifier
        self.limiter = limiter
        self.operator_token = operator_token.encode() if operator_token else None
        self.admin_only = admin_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _open(scope["path"]):
            await self.app(scope, receive, send)
            return
        caller = await self._caller(scope)
        if caller is None:
            answer = problem(
                401, "unauthorized", "A valid bearer token is required.",
                headers={"WWW-Authenticate": 'Bearer realm="merlin"'},
            )  # fmt: skip
            await answer(scope, receive, send)
            return
        if (self.admin_only or scope["path"] in ADMIN_PATHS) and not caller.may(ADMIN):
            await problem(403, "forbidden", "This route needs the admin scope.")(scope, receive, send)
            return
        if self.limiter is not None and caller is not ANYONE and caller is not OPERATOR:
            wait = self.limiter.wait(caller.subject)
            if wait > 0:
                answer = problem(
                    429, "rate-limited", "Too many requests from this caller; retry later.",
                    headers={"Retry-After": retry_after(wait)},
                )  # fmt: skip
                await answer(scope, receive, send)
                return
        scope.setdefault("state", {})["caller"] = caller
        await self.app(scope, receive, send)

    async def _caller(self, scope: Scope) -> Caller | None:
        if self.verifier is None and self.operator_token is None:
            return ANYONE  # authentication disabled (``verifier_for`` warned)
        header = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value
                break
        if not header and self.tickets is not None:
            return self.tickets(scope)
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer" or not token:
            return None
        if self.operator_token is not None and hmac.compare_digest(token, self.operator_token):
            return OPERATOR
        if self.verifier is None:
            return None
        try:
            return await self.verifier.caller(token.decode("ascii"))
        except (Unauthenticated, UnicodeDecodeError) as exc:
            log.info("unauthenticated", path=scope["path"], reason=str(exc))
            return None


def _open(path: str) -> bool:
    return path in OPEN_PATHS or path in EXPLORER_PATHS or path.startswith(EXPLORER_PREFIXES)


def verifier_for(settings: AuthSettings, service: str) -> Verifier | None:
    """The verifier these settings ask for; None (and a loud warning) when authentication is disabled."""
    settings.require()
    if settings.disabled:
        log.warning(
            "authentication_disabled", service=service,
            warning="MERLIN_AUTH_DISABLED=true: every caller may do everything; only behind a gateway"
            " that authenticates",
        )  # fmt: skip
        return None
    return Verifier(settings)


def authorize(request: Request, scope: str, room: str | None = None) -> Caller:
    """The caller, if its token grants ``scope`` (and ``room``); else 403."""
    caller: Caller = request.scope["state"]["caller"]  # as ``Authenticate`` left it
    if not caller.may(scope):
        raise Forbidden(f"The token lacks the {scope} scope.")
    if room is not None and not caller.may_use(room):
        raise Forbidden("The token does not cover this room.")
    return caller
