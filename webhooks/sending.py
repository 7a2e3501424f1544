"""One event to one endpoint over HTTP: signed, idempotent, retried with backoff until it lands or gives up.

Each call carries the event envelope as JSON, ``Idempotency-Key`` and
``webhook-id`` set to the event id (the same on every retry), and a Standard
Webhooks signature (``webhook-timestamp``, ``webhook-signature``).
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import backoff
from standardwebhooks import Webhook

from domain.envelope import format_time
from domain.errors import MerlinError
from kernel import tracing
from webhooks.calls import CallFailed, Send
from webhooks.endpoints import Endpoint

if TYPE_CHECKING:
    from opentelemetry.context import Context

_RETRYABLE_STATUSES = frozenset({408, 429})


@dataclass(frozen=True, slots=True)
class Attempt:
    at: str
    status: int | None = None
    error: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at, "status": self.status, "error": self.error, "seconds": round(self.seconds, 4)}


class _Retryable(Exception):
    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class DeliveryFailed(MerlinError):
    """The endpoint refused the event for good, or every retry failed."""

    def __init__(self, reason: str, attempts: list[Attempt]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def _waits(base: float, cap: float) -> Any:
    """backoff wait generator: exponential with full jitter, or the server's Retry-After when it sent one."""

    def generator(**_: object) -> Generator[float, BaseException | None, None]:
        failure = yield 0.0  # backoff primes the generator first
        n = 0
        while True:
            if isinstance(failure, _Retryable) and failure.retry_after is not None:
                delay = failure.retry_after
            else:
                delay = backoff.full_jitter(min(cap, base * 2**n))
            n += 1
            failure = yield delay

    return generator


class Deliverer:
    """Delivers events to one endpoint through a shared sender."""

    def __init__(self, send: Send, endpoint: Endpoint) -> None:
        self.send = send
        self.reconfigure(endpoint)

    def reconfigure(self, endpoint: Endpoint) -> None:
        """Deliver by ``endpoint`` from the next attempt on: URL, secrets, timeout; new retry
        policies from the next event (one already retrying keeps the policy it started with)."""
        self.endpoint = endpoint
        self._url = str(endpoint.url)
        self._webhooks = {
            secret: Webhook(secret) for secret in (endpoint.secret, *(o.secret for o in endpoint.old_secrets))
        }
        policy = endpoint.retry
        # Built once per definition: decorating per call cost about a tenth of the forwarder's CPU.
        self._retrying = backoff.on_exception(
            _waits(policy.base, policy.cap),
            _Retryable,
            max_tries=policy.max_attempts,
            max_time=policy.max_elapsed,
            jitter=None,
            raise_on_giveup=True,
        )(self._attempt)

    def signed_headers(self, event_id: str, body: bytes) -> dict[str, str]:
        """The headers of one attempt; each signature covers id, timestamp and body.

        During a secret's rotation the call carries a signature per secret (Standard Webhooks
        allows several, space-separated), so a receiver verifies with the old or the new one.
        """
        now = datetime.now(UTC)
        text = body.decode()
        signatures = " ".join(
            self._webhooks[secret].sign(event_id, now, text) for secret in self.endpoint.signing_secrets(now)
        )
        return {
            "content-type": "application/json",
            "idempotency-key": event_id,
            "webhook-id": event_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signatures,
        }

    async def deliver(
        self, event_id: str, body: bytes, traceparent: str | None = None, tracestate: str | None = None
    ) -> list[Attempt]:
        """Deliver until a 2xx (return the attempts) or a final failure (raise DeliveryFailed).

        With tracing on, each attempt is a span, a child of the event's trace context
        (``traceparent``, ``tracestate``), and its call carries that span's context.
        """
        attempts: list[Attempt] = []
        parent = tracing.context_of(traceparent, tracestate) if tracing.ENABLED else None
        try:
            await self._retrying(event_id, body, attempts, parent)
        except _Retryable as exc:
            raise DeliveryFailed(f"gave up after {len(attempts)} attempts: {exc}", attempts) from exc
        return attempts

    async def _attempt(
        self, event_id: str, body: bytes, attempts: list[Attempt], parent: Context | None = None
    ) -> None:
        headers = self.signed_headers(event_id, body)
        if tracing.ENABLED:
            await self._traced_attempt(event_id, body, headers, attempts, parent)
        else:
            await self._call(body, headers, attempts)

    async def _traced_attempt(
        self,
        event_id: str,
        body: bytes,
        headers: dict[str, str],
        attempts: list[Attempt],
        parent: Context | None,
    ) -> None:
        """One attempt as a CLIENT span; the call carries its ``traceparent`` (and ``tracestate``)."""
        from opentelemetry.trace import SpanKind

        number = len(attempts) + 1
        url = urlsplit(self._url)
        attributes: dict[str, str | int] = {
            "http.request.method": "POST",
            "server.address": url.hostname or "",
            "server.port": url.port or (443 if url.scheme == "https" else 80),
            "merlin.endpoint": self.endpoint.name,
            "merlin.event_id": event_id,
            "merlin.delivery.attempt": number,
        }
        if number > 1:
            attributes["http.request.resend_count"] = number - 1
        with tracing.tracer().start_as_current_span(
            f"deliver {self.endpoint.name}", context=parent, kind=SpanKind.CLIENT, attributes=attributes
        ) as span:
            tracing.inject_into(headers)
            try:
                await self._call(body, headers, attempts)
            finally:
                attempt = attempts[-1] if len(attempts) == number else None
                if attempt is not None and attempt.status is not None:
                    span.set_attribute("http.response.status_code", attempt.status)
                    if not 200 <= attempt.status < 300:
                        span.set_attribute("error.type", str(attempt.status))
                elif attempt is not None:
                    span.set_attribute("error.type", "call_failed")

    async def _call(self, body: bytes, headers: dict[str, str], attempts: list[Attempt]) -> None:
        started = time.perf_counter()
        at = format_time(datetime.now(UTC))
        try:
            answer = await self.send(self._url, body, headers, self.endpoint.timeout)
        except CallFailed as exc:
            attempts.append(Attempt(at, error=str(exc), seconds=time.perf_counter() - started))
            raise _Retryable("timed out" if exc.timed_out else "transport error") from exc
        status = answer.status
        attempts.append(Attempt(at, status=status, seconds=time.perf_counter() - started))
        if 200 <= status < 300:
            return
        if status in _RETRYABLE_STATUSES or status >= 500:
            raise _Retryable(f"answered {status}", _retry_after(answer.retry_after))
        raise DeliveryFailed(f"refused with {status}", attempts)
