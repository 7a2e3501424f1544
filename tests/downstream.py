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
answer, arrival time. Run on its own: ``python -m tests.downstream --port 9000``.
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
from standardwebhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route


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


@dataclass
class Downstream:
    behaviours: dict[str, Behaviour] = field(default_factory=lambda: defaultdict(Behaviour))
    secrets: dict[str, Webhook] = field(default_factory=dict)
    received: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    lock: threading.Lock = field(default_factory=threading.Lock)

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
    uvicorn.run(Downstream().app(), host="127.0.0.1", port=arguments.port, log_level="warning")


if __name__ == "__main__":
    main()
