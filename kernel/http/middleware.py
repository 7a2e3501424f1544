"""ASGI middleware shared by the APIs: a body-size limit, per-route Prometheus metrics, request ids
and the access log."""

from __future__ import annotations

import re
import time
from random import getrandbits
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kernel.http.errors import BodyTooLarge
from kernel.http.responses import REQUEST_ID_HEADER, problem
from kernel.logs import access_logger


class BodyLimit:
    """Refuse bodies over ``max_bytes`` with 413, before anything parses them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            too_large = problem(413, "too-large", f"The request body is larger than {self.max_bytes} bytes.")
            await too_large(scope, receive, send)
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # An HTTPException, so the framework answers 413 instead of a parse error.
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited, send)


class HttpMetrics:
    """Count requests and time them per route template, method and status."""

    def __init__(self, app: ASGIApp, registry: CollectorRegistry, service: str) -> None:
        self.app = app
        self.requests = Counter(
            "merlin_http_requests",
            "HTTP requests answered",
            ["service", "method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "merlin_http_request_seconds",
            "Time from request to response start",
            # By status too: a 503 after the delivery timeout and a 202 are different latencies.
            ["service", "method", "route", "status"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            code = str(status)
            self.latency.labels(self.service, method, route, code).observe(time.perf_counter() - started)
            self.requests.labels(self.service, method, route, code).inc()


# A client's X-Request-Id is kept if it is a plain token: letters, digits and ``-._:``, at most 128.
_REQUEST_ID = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_REQUEST_ID_HEADER = REQUEST_ID_HEADER.encode("ascii")


def request_id(given: bytes | None) -> str:
    """``given`` if it is a sane request id, else a new one (32 hex digits)."""
    if given is not None and _REQUEST_ID.fullmatch(given) is not None:
        return given.decode("ascii")
    return f"{getrandbits(128):032x}"  # an id, not a secret: no system call for it


class RequestLog:
    """Give each request an id and, if ``access`` is on, log one line when it is answered.

    The id is the client's ``X-Request-Id`` when it is a sane token, else a new one; it is echoed
    in the answer's ``X-Request-Id`` and bound to the request's log lines (structlog's context
    variables). The access line has the route template (the raw path when no route matched),
    the method, the status, the time to the end of the answer, the caller's subject when
    authenticated, and the request id.
    """

    def __init__(self, app: ASGIApp, access: bool = True, log: Any = None) -> None:
        self.app = app
        self.access = access
        self.log = log if log is not None else access_logger()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = None
        for name, value in scope["headers"]:
            if name == _REQUEST_ID_HEADER:
                given = value
                break
        rid = request_id(given)
        echoed = rid.encode("ascii")
        started = time.perf_counter()
        status = 500

        async def answer(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), (_REQUEST_ID_HEADER, echoed)]}
            await send(message)

        bound = structlog.contextvars.bind_contextvars(request_id=rid)
        try:
            await self.app(scope, receive, answer)
        except BaseException:
            # Starlette's outermost handler answers an unexpected error past this middleware: the id
            # goes on that 500 from here (kernel.http.errors).
            scope.setdefault("state", {})["request_id"] = rid
            raise
        finally:
            if self.access:
                self._log(scope, status, started, rid)
            structlog.contextvars.reset_contextvars(**bound)

    def _log(self, scope: Scope, status: int, started: float, rid: str) -> None:
        route = getattr(scope.get("route"), "path", None) or scope["path"]
        caller = scope.get("state", {}).get("caller")
        self.log.info(
            "request",
            method=scope["method"],
            route=route,
            status=status,
            duration_ms=round((time.perf_counter() - started) * 1000, 3),
            sub=getattr(caller, "subject", None) or None,
            request_id=rid,
        )
