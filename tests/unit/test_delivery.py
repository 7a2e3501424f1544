"""Delivery to one endpoint: signed, idempotent, retried by the rules, through a scripted sender."""

from __future__ import annotations

import pytest
from standardwebhooks import Webhook

from tests.unit.scripted import Call, Scripted
from webhooks.calls import CallFailed
from webhooks.endpoints import Endpoint, RetryPolicy
from webhooks.sending import Deliverer, DeliveryFailed, _Retryable, _waits

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
BODY = b'{"event_id": "e1", "payload": {"body": "hi"}}'


def endpoint(**changes: object) -> Endpoint:
    fields: dict[str, object] = {
        "name": "hook",
        "url": "http://downstream.test/hook",
        "secret": SECRET,
        "retry": RetryPolicy(max_attempts=5, base=0.001, cap=0.002),
        "timeout": 0.5,
    }
    fields.update(changes)
    return Endpoint.model_validate(fields)


def scripted(*answers: int | CallFailed) -> tuple[Scripted, list[Call]]:
    send = Scripted(list(answers))
    return send, send.seen


async def test_retries_5xx_429_408_timeouts_and_connect_errors_with_one_idempotency_key() -> None:
    refused, slow = (
        CallFailed("ClientConnectorError: refused"),
        CallFailed("timeout after 0.5 s", timed_out=True),
    )
    client, seen = scripted(503, 429, 408, refused, slow, 200)
    with pytest.raises(DeliveryFailed):  # five attempts allowed, the sixth would have worked
        await Deliverer(client, endpoint()).deliver("e1", BODY)
    client, seen = scripted(503, 429, refused, 200)
    attempts = await Deliverer(client, endpoint()).deliver("e1", BODY)
    assert [a.status for a in attempts] == [503, 429, None, 200]
    assert attempts[2].error is not None
    assert attempts[2].error.startswith("ClientConnectorError")
    assert {request.headers["idempotency-key"] for request in seen} == {"e1"}
    assert {request.headers["webhook-id"] for request in seen} == {"e1"}
    assert all(request.body == BODY for request in seen)


@pytest.mark.parametrize("status", [400, 401, 404, 410, 422])
async def test_other_4xx_are_final_at_once(status: int) -> None:
    client, seen = scripted(status)
    with pytest.raises(DeliveryFailed, match=f"refused with {status}") as failed:
        await Deliverer(client, endpoint()).deliver("e1", BODY)
    assert len(seen) == 1
    assert [a.status for a in failed.value.attempts] == [status]


async def test_the_retry_budget_ends_in_a_final_failure_with_every_attempt() -> None:
    client, seen = scripted(*([503] * 10))
    with pytest.raises(DeliveryFailed, match="gave up after 3 attempts") as failed:
        await Deliverer(client, endpoint(retry=RetryPolicy(max_attempts=3, base=0.001))).deliver("e1", BODY)
    assert len(seen) == 3
    assert [a.status for a in failed.value.attempts] == [503, 503, 503]


def test_waits_grow_with_full_jitter_and_follow_retry_after() -> None:
    waits = _waits(base=1.0, cap=8.0)()
    next(waits)
    plain = [waits.send(_Retryable("503")) for _ in range(6)]
    assert all(0 <= wait <= bound for wait, bound in zip(plain, [1, 2, 4, 8, 8, 8], strict=True))
    assert waits.send(_Retryable("429", retry_after=7.5)) == 7.5


async def test_receivers_verify_the_signature_and_reject_a_tampered_body() -> None:
    deliverer = Deliverer(Scripted([]), endpoint())
    headers = deliverer.signed_headers("e1", BODY)
    receiver = Webhook(SECRET)
    assert receiver.verify(BODY, headers)["event_id"] == "e1"
    with pytest.raises(Exception, match="signature"):
        receiver.verify(BODY.replace(b"hi", b"ho"), headers)
    with pytest.raises(Exception, match="signature"):
        Webhook("whsec_" + "A" * 32).verify(BODY, headers)


def test_an_unusable_secret_is_refused_when_the_file_is_read() -> None:
    with pytest.raises(ValueError, match="Standard Webhooks secret"):
        endpoint(secret="not base64 at all!")
