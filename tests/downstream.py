"""A real downstream HTTP server for tests and benchmarks: records what it receives, misbehaves on request.

Endpoints live at ``POST /hooks/{name}``. ``POST /_control/{name}`` sets how that
endpoint answers, optionally for a time window, then it answers 200 again:

    {"mode": "fail", "status": 503, "seconds": 10}
    {"mode": "throttle", "retry_after": 1}          # 429 with Retry-After
    {"mode": "slow", "delay": 0.2}
    {"mode": "hang"}                                # never answers
    {"mode": "close"}                               # drops the connection
    {"mode": "refuse", "match": "text", "status": 400}   # only bodies containing text
    {"mode": "redirect", "location": "http://169.254.169.254/"}   # 302 there
    {"secret": "whsec_..."}                         # verify Standard Webhooks signatures

``GET /_received/{name}`` lists every request: headers of interest, body,
answer, arrival time. Every request's body and headers are kept to be checked
against the schemas merlin publishes for them (``webhooks.payload_schemas``):
``drifted`` lists those that depart, and the tests' ``downstream`` fixture fails
the test on any. Run on its own: ``python -m tests.downstream --port 9000``
(without the check: benchmarks run it, and measure merlin, not the check).
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import uvicorn
from jsonschema import Draft202012Validator
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from domain import EVENT_TYPES
from webhooks.payload_schemas import event_schemas, headers_schema


@dataclass
class Behaviour:
    mode: str = "ok"
    status: int = 503
    retry_after: float = 1.0
    delay: float = 0.0
    match: str | None = None
    location: str | None = None
    until: float | None = None  # monotonic time when it reverts to "ok"

    def active(self) -> str:
        if self.until is not None and time.monotonic() >= self.until:
            return "ok"
        return self.mode


class PayloadCheck:
    """What is wrong with a delivery, by the schemas merlin publishes for its body and its headers."""

    def __init__(self) -> None:
        checker = Draft202012Validator.FORMAT_CHECKER  # "uuid" and "date-time" checked, not only named
        self.headers = Draft202012Validator(headers_schema(), format_checker=checker)
        self.bodies: dict[str, Draft202012Validator] = {
            event_type: Draft202012Validator(schema, format_checker=checker)
            for event_type, schema in event_schemas().items()
        }
        self._seen: dict[bytes, list[str]] = {}  # a retry's body is checked once

    def problems(self, headers: dict[str, str], body: bytes) -> list[str]:
        """Each way the call departs from its schemas; none for a call as published."""
        found = [
            f"header {_where(error.path)}: {error.message}" for error in self.headers.iter_errors(headers)
        ]
        if body not in self._seen:
            self._seen[body] = self._body(body)
        found += self._seen[body]
        # What no schema of one document can say: the three carry the same id.
        try:
            event_id = orjson.loads(body).get("event_id")
        except (orjson.JSONDecodeError, AttributeError):
            return found
        ids = {headers.get("webhook-id"), headers.get("idempotency-key"), event_id}
        if len(ids) != 1:
            found.append(f"webhook-id, Idempotency-Key and event_id differ: {sorted(map(str, ids))}")
        return found

    def _body(self, body: bytes) -> list[str]:
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return [f"body: not JSON ({exc})"]
        kind = document.get("event_type") if isinstance(document, dict) else None
        validator = self.bodies.get(kind) if isinstance(kind, str) else None
        if validator is None:
            return [f"body: event_type {kind!r} is none of {', '.join(EVENT_TYPES)}"]
        return [f"body {_where(error.path)}: {error.message}" for error in validator.iter_errors(document)]


def _where(path: Any) -> str:
    return "/".join(str(part) for part in path) or "(whole)"


@dataclass
class Downstream:
    behaviours: dict[str, Behaviour] = field(default_factory=lambda: defaultdict(Behaviour))
    secrets: dict[str, Webhook] = field(default_factory=dict)
    received: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Every call as it came (endpoint, headers, body), to check against the published schemas; kept
    # only while ``check_payloads``. Checked afterwards (``drifted``), off the calls' path: a check
    # takes about a millisecond, which would slow every answer and the tests timed by them.
    check_payloads: bool = True
    arrived: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)

    def drifted(self) -> list[tuple[str, list[str], dict[str, str], bytes]]:
        """The calls so far that depart from the published schemas: endpoint, what is wrong, the call."""
        with self.lock:
            calls = list(self.arrived)
        check = PayloadCheck()
        return [
            (name, problems, headers, body)
            for name, headers, body in calls
            if (problems := check.problems(headers, body))
        ]

    def assert_no_drift(self) -> None:
        """Fail when a call so far departs from the published delivery schemas, naming the first."""
        drifted = self.drifted()
        if drifted:
            name, problems, headers, body = drifted[0]
            raise AssertionError(
                f"{len(drifted)} deliveries depart from their published schemas; the first, to {name!r}: "
                f"{'; '.join(problems)} (headers {headers}, body {body[:600]!r})"
            )

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/hooks/{name}", self._hook, methods=["POST"]),
                Route("/_control/{name}", self._control, methods=["POST"]),
                Route("/_received/{name}", self._received, methods=["GET"]),
            ]
        )

    async def _control(self, request: Request) -> Response:
        name = request.path_params["name"]
        spec = orjson.loads(await request.body())
        if "secret" in spec:
            self.secrets[name] = Webhook(spec.pop("secret"))
        if spec:
            seconds = spec.pop("seconds", None)
            behaviour = Behaviour(**spec)
            behaviour.until = None if seconds is None else time.monotonic() + float(seconds)
            self.behaviours[name] = behaviour
        return Response(status_code=204)

    async def _received(self, request: Request) -> Response:
        with self.lock:
            return Response(
                orjson.dumps(self.received[request.path_params["name"]]), media_type="application/json"
            )

    async def _hook(self, request: Request) -> Response:
        name = request.path_params["name"]
        try:
            body = await request.body()
        except ClientDisconnect:  # the caller gave up first (e.g. its timeout)
            return Response(status_code=499)
        behaviour = self.behaviours[name]
        mode = behaviour.active()
        if mode == "refuse" and behaviour.match is not None and behaviour.match.encode() not in body:
            mode = "ok"
        record: dict[str, Any] = {
            "at": time.time(),
            "idempotency_key": request.headers.get("idempotency-key"),
            "webhook_id": request.headers.get("webhook-id"),
            "webhook_timestamp": request.headers.get("webhook-timestamp"),
            "webhook_signature": request.headers.get("webhook-signature"),
            "traceparent": request.headers.get("traceparent"),
            "body": orjson.loads(body) if body else None,
            "verified": self._verify(name, body, request),
        }
        if self.check_payloads:
            with self.lock:
                self.arrived.append((name, dict(request.headers), body))
        if mode == "hang":
            record["answer"] = "hang"
            self._record(name, record)
            await asyncio.sleep(3600)
        if mode == "slow":
            await asyncio.sleep(behaviour.delay)
        if mode == "close":
            record["answer"] = "close"
            self._record(name, record)
            return StreamingResponse(_broken_body())
        status, headers = 200, {}
        if mode in ("fail", "refuse"):
            status = behaviour.status
        elif mode == "throttle":
            status, headers = 429, {"Retry-After": f"{behaviour.retry_after:g}"}
        elif mode == "redirect":
            status, headers = 302, {"Location": behaviour.location or "/"}
        record["answer"] = status
        self._record(name, record)
        return Response(status_code=status, headers=headers)

    def _verify(self, name: str, body: bytes, request: Request) -> bool | None:
        webhook = self.secrets.get(name)
        if webhook is None:
            return None
        try:
            webhook.verify(body, dict(request.headers))
        except Exception:  # any verification failure means "not verified"
            return False
        return True

    def _record(self, name: str, record: dict[str, Any]) -> None:
        with self.lock:
            self.received[name].append(record)


async def _broken_body() -> AsyncIterator[bytes]:
    """Send the headers, then drop the connection in the middle of the body."""
    yield b"{"
    raise ConnectionAbortedError("closing the connection on purpose")


class ServerThread:
    """Serve a Downstream on 127.0.0.1 in a background thread (its own event loop)."""

    def __init__(self, downstream: Downstream, port: int) -> None:
        config = uvicorn.Config(
            downstream.app(), host="127.0.0.1", port=port, log_level="warning", lifespan="off",
            timeout_graceful_shutdown=1,
        )  # fmt: skip
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="downstream", daemon=True)
        self.url = f"http://127.0.0.1:{port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("downstream did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.server.force_exit = True
        self.thread.join(10)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=9000)
    arguments = parser.parse_args()
    uvicorn.run(
        Downstream(check_payloads=False).app(), host="127.0.0.1", port=arguments.port, log_level="warning"
    )


if __name__ == "__main__":
    main()
