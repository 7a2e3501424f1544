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
from typing import Any

import backoff
import httpx
from standardwebhooks import Webhook

from domain.envelope import format_time
from forwarder.endpoints import Endpoint

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


class DeliveryFailed(Exception):
    """The endpoint refused the event for good, or every retry failed."""

    def __init__(self, reason: str, attempts: list[Attempt]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.attempts = attempts


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
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
    """Delivers events to one endpoint through a shared, pooled ``httpx.AsyncClient``."""

    def __init__(self, client: httpx.AsyncClient, endpoint: Endpoint) -> None:
        self.client = client
        self.endpoint = endpoint
        self._webhook = Webhook(endpoint.secret)
        self._url = str(endpoint.url)

    def signed_headers(self, event_id: str, body: bytes) -> dict[str, str]:
        """The headers of one attempt; the signature covers id, timestamp and body."""
        now = datetime.now(UTC)
        return {
            "content-type": "application/json",
            "idempotency-key": event_id,
            "webhook-id": event_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": self._webhook.sign(event_id, now, body.decode()),
        }

    async def deliver(self, event_id: str, body: bytes) -> list[Attempt]:
        """Deliver until a 2xx (return the attempts) or a final failure (raise DeliveryFailed)."""
        attempts: list[Attempt] = []
        policy = self.endpoint.retry

        async def attempt() -> None:
            started = time.perf_counter()
            at = format_time(datetime.now(UTC))
            try:
                response = await self.client.post(
                    self._url,
                    content=body,
                    headers=self.signed_headers(event_id, body),
                    timeout=self.endpoint.timeout,
                )
            except httpx.TimeoutException as exc:
                attempts.append(
                    Attempt(at, error=f"timeout: {type(exc).__name__}", seconds=time.perf_counter() - started)
                )
                raise _Retryable("timed out") from exc
            except httpx.TransportError as exc:
                attempts.append(
                    Attempt(at, error=f"{type(exc).__name__}: {exc}", seconds=time.perf_counter() - started)
                )
                raise _Retryable(f"transport error: {type(exc).__name__}") from exc
            status = response.status_code
            attempts.append(Attempt(at, status=status, seconds=time.perf_counter() - started))
            if 200 <= status < 300:
                return
            if status in _RETRYABLE_STATUSES or status >= 500:
                raise _Retryable(f"answered {status}", _retry_after(response))
            raise DeliveryFailed(f"refused with {status}", attempts)

        retrying = backoff.on_exception(
            _waits(policy.base, policy.cap),
            _Retryable,
            max_tries=policy.max_attempts,
            max_time=policy.max_elapsed,
            jitter=None,
            raise_on_giveup=True,
        )(attempt)
        try:
            await retrying()
        except _Retryable as exc:
            raise DeliveryFailed(f"gave up after {len(attempts)} attempts: {exc}", attempts) from exc
        return attempts
