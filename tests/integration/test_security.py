"""Who may do what, on the real services: tokens refused, scopes and rooms enforced, no oracle, no leaks."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from kernel.auth import ADMIN, READ, WRITE
from kernel.position import partition_of
from merlin.local.service_processes import Service, Services

PROBLEM = "application/problem+json"


@dataclass
class Apis:
    services: Services
    write: Service
    read: Service
    client: httpx.AsyncClient

    def as_(
        self, subject: str, rooms: tuple[str, ...] = ("*",), scopes: tuple[str, ...] = (WRITE, READ)
    ) -> dict[str, str]:
        return self.services.headers(subject, rooms, scopes)

    async def post(self, room: str, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
        return await self.client.post(
            f"{self.write.url}/v1/rooms/{room}/messages", json=body, headers=headers
        )


@pytest.fixture
async def apis(sqlite_services: Services) -> AsyncIterator[Apis]:
    write, read = await sqlite_services.write_api(), await sqlite_services.read_api()
    sqlite_services.forwarder()
    async with httpx.AsyncClient(timeout=30) as client:
        yield Apis(sqlite_services, write, read, client)


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "alice", "scope": f"{WRITE} {READ} {ADMIN}", "rooms": ["*"], "aud": "merlin",
            "iss": "merlin", "iat": now, "exp": now + 600, **changes}  # fmt: skip


def _b64(document: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()


def _bad_tokens(secret: str) -> dict[str, str]:
    good = jwt.encode(_claims(), secret, algorithm="HS256")
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {
        "expired": jwt.encode(_claims(exp=int(time.time()) - 600), secret, algorithm="HS256"),
        "wrong audience": jwt.encode(_claims(aud="another-service"), secret, algorithm="HS256"),
        "wrong issuer": jwt.encode(_claims(iss="https://elsewhere.example"), secret, algorithm="HS256"),
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims())}.",
        "RS256 where HS256 is configured": jwt.encode(_claims(), other_key, algorithm="RS256"),
        "tampered signature": good[:-1] + ("A" if good[-1] != "A" else "B"),
        "tampered claims": f"{good.split('.')[0]}.{_b64(_claims(sub='mallory'))}.{good.split('.')[2]}",
        "signed with another secret": jwt.encode(_claims(), "x" * 48, algorithm="HS256"),
        "not a JWT": "hello",
    }


async def test_requests_without_a_good_token_are_401_and_say_nothing_more(apis: Apis) -> None:
    message = uuid.uuid4()
    targets = [
        ("POST", f"{apis.write.url}/v1/rooms/r1/messages"),
        ("PATCH", f"{apis.write.url}/v1/rooms/r1/messages/{message}"),
        ("GET", f"{apis.read.url}/v1/rooms/r1/messages"),
        ("GET", f"{apis.read.url}/v1/rooms/r1/messages/{message}"),
        ("GET", f"{apis.read.url}/v1/events/{message}"),
        ("GET", f"{apis.read.url}/metrics"),
        ("GET", f"{apis.write.url}/openapi.json"),
    ]
    cases: dict[str, dict[str, str]] = {"no token": {}, "not bearer": {"Authorization": "Basic YWxpY2U6eA=="}}
    for why, token in _bad_tokens(apis.services.auth_secret).items():
        cases[why] = {"Authorization": f"Bearer {token}"}
    for why, headers in cases.items():
        for method, url in targets:
            answer = await apis.client.request(method, url, json={"body": "hi"}, headers=headers)
            assert answer.status_code == 401, (why, method, url, answer.text)
            assert answer.headers["www-authenticate"] == 'Bearer realm="merlin"'
            assert answer.headers["content-type"] == PROBLEM
            assert set(answer.json()) == {"type", "title", "status"}, answer.json()  # no reason given
    for service in (apis.write, apis.read):
        assert (await apis.client.get(f"{service.url}/healthz")).status_code == 200
        assert (await apis.client.get(f"{service.url}/readyz")).status_code == 200


async def test_the_sender_is_the_caller(apis: Apis) -> None:
    alice = apis.as_("alice")
    created = await apis.post("r1", {"body": "no sender_id: the token says who"}, alice)
    assert created.status_code == 202, created.text
    same = await apis.post("r1", {"sender_id": "alice", "body": "the same sender, said twice"}, alice)
    assert same.status_code == 202
    forged = await apis.post("r1", {"sender_id": "bob", "body": "PWNED"}, alice)
    assert forged.status_code == 403
    assert forged.headers["content-type"] == PROBLEM
    message = created.json()
    read = await apis.client.get(
        f"{apis.read.url}/v1/rooms/r1/messages/{message['message_id']}",
        params={"after_position": message["position"]}, headers=alice,
    )  # fmt: skip
    assert read.json()["sender_id"] == "alice"
    edit = await apis.client.patch(
        f"{apis.write.url}/v1/rooms/r1/messages/{message['message_id']}",
        json={"sender_id": "alice", "body": "PWNED"}, headers=apis.as_("mallory"),
    )  # fmt: skip
    assert edit.status_code == 403


async def test_rooms_and_scopes_are_enforced(apis: Apis) -> None:
    only_r1 = apis.as_("alice", rooms=("r1",))
    assert (await apis.post("r1", {"body": "in my room"}, only_r1)).status_code == 202
    assert (await apis.post("r2", {"body": "not my room"}, only_r1)).status_code == 403
    assert (
        await apis.client.get(f"{apis.read.url}/v1/rooms/r2/messages", headers=only_r1)
    ).status_code == 403
    reader = apis.as_("carol", scopes=(READ,))
    assert (await apis.post("r1", {"body": "a reader writes"}, reader)).status_code == 403
    assert (await apis.client.get(f"{apis.read.url}/v1/rooms/r1/messages", headers=reader)).status_code == 200
    writer = apis.as_("dave", scopes=(WRITE,))
    assert (await apis.client.get(f"{apis.read.url}/v1/rooms/r1/messages", headers=writer)).status_code == 403
    read, write = apis.read.url, apis.write.url
    operations = [(read, "/metrics"), (write, "/metrics"), (read, "/v1/projection")]
    for url, path in operations:
        assert (await apis.client.get(f"{url}{path}", headers=apis.as_("alice"))).status_code == 403, path
        operator = apis.as_("ops", scopes=(ADMIN,))
        assert (await apis.client.get(f"{url}{path}", headers=operator)).status_code == 200, path
    # The API explorer: its page is a static shell, open; the document it loads takes any caller's token.
    for url in (read, write):
        assert (await apis.client.get(f"{url}/docs")).status_code == 200
        assert (await apis.client.get(f"{url}/openapi.json", headers=reader)).status_code == 200


async def test_an_event_of_a_room_the_caller_cannot_read_looks_unknown(apis: Apis) -> None:
    secret = (await apis.post("private", {"body": "before the edit"}, apis.as_("alice"))).json()
    # Eve's room shares the private room's partition, so her reads wait for its position.
    partitions = apis.services.kafka.partitions
    neighbour = next(
        room for room in (f"room-{n}" for n in range(100))
        if partition_of(room, partitions) == partition_of("private", partitions)
    )  # fmt: skip
    outsider = apis.as_("eve", rooms=(neighbour,))
    known = await apis.client.get(
        f"{apis.read.url}/v1/events/{secret['event_id']}", params={"after_position": secret["position"]},
        headers=outsider,
    )  # fmt: skip
    unknown = await apis.client.get(
        f"{apis.read.url}/v1/events/{uuid.uuid4()}", params={"after_position": secret["position"]},
        headers=outsider,
    )  # fmt: skip
    assert (known.status_code, unknown.status_code) == (404, 404)
    assert known.json() == unknown.json()
    without_wait = await apis.client.get(f"{apis.read.url}/v1/events/{secret['event_id']}", headers=outsider)
    assert without_wait.json() == {"event_id": secret["event_id"], "status": "pending"}
    member = await apis.client.get(
        f"{apis.read.url}/v1/events/{secret['event_id']}", headers=apis.as_("alice")
    )
    assert member.json()["status"] == "applied"


async def test_idempotency_keys_are_each_senders_own(apis: Apis) -> None:
    key = {"Idempotency-Key": "k-shared"}
    mallory = await apis.post("r1", {"body": "first, with bob's key"}, {**apis.as_("mallory"), **key})
    bob = await apis.post("r1", {"body": "bob's message"}, {**apis.as_("bob"), **key})
    assert mallory.json()["message_id"] != bob.json()["message_id"]
    created = bob.json()
    outcome = await apis.client.get(
        f"{apis.read.url}/v1/events/{created['event_id']}", params={"after_position": created["position"]},
        headers=apis.as_("bob"),
    )  # fmt: skip
    assert outcome.json()["status"] == "applied"


async def test_no_secret_or_token_reaches_the_logs(apis: Apis) -> None:
    tokens = [apis.as_("alice")["Authorization"].removeprefix("Bearer ")]
    await apis.post("r1", {"body": "logged?"}, {"Authorization": f"Bearer {tokens[0]}"})
    for bad in _bad_tokens(apis.services.auth_secret).values():
        tokens.append(bad)
        await apis.post("r1", {"body": "refused"}, {"Authorization": f"Bearer {bad}"})
    logs = "".join(service.output() for service in apis.services.running)
    assert '"unauthenticated"' in logs  # refusals are logged, with a reason and no token
    for secret in [apis.services.auth_secret, apis.services.admin_token, *tokens]:
        if len(secret) > 8:
            assert secret not in logs


async def test_with_authentication_disabled_the_body_names_the_sender_and_the_log_says_so(
    sqlite_services: Services,
) -> None:
    write = await sqlite_services.write_api(MERLIN_AUTH_DISABLED="true", MERLIN_AUTH_JWT_SECRET="")
    async with httpx.AsyncClient(base_url=write.url or "", timeout=30) as client:
        named = await client.post("/v1/rooms/r1/messages", json={"sender_id": "gateway-user", "body": "hi"})
        assert named.status_code == 202, named.text
        anonymous = await client.post("/v1/rooms/r1/messages", json={"body": "who?"})
        assert anonymous.status_code == 422
        assert anonymous.json()["errors"][0]["field"] == "sender_id"
    assert '"authentication_disabled"' in write.output()


async def test_each_caller_is_rate_limited_on_its_own(sqlite_services: Services) -> None:
    write = await sqlite_services.write_api(MERLIN_RATE_LIMIT_PER_SECOND="0.5", MERLIN_RATE_LIMIT_BURST="3")
    alice, bob = sqlite_services.headers("alice"), sqlite_services.headers("bob")
    async with httpx.AsyncClient(base_url=write.url or "", timeout=30) as client:
        answers = [
            await client.post("/v1/rooms/r1/messages", json={"body": "hi"}, headers=alice) for _ in range(4)
        ]
        assert [a.status_code for a in answers] == [202, 202, 202, 429]
        assert answers[-1].headers["retry-after"] == "2"
        assert answers[-1].headers["content-type"] == PROBLEM
        assert (
            await client.post("/v1/rooms/r1/messages", json={"body": "hi"}, headers=bob)
        ).status_code == 202
        assert (await client.get("/healthz")).status_code == 200
