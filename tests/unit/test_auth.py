"""Bearer tokens: what is accepted, what is refused, and keys fetched from a real JWKS server."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from pydantic import ValidationError

from kernel.auth import ADMIN, ALL_ROOMS, READ, WRITE, AuthSettings, Caller, Unauthenticated, Verifier, mint
from kernel.errors import InfrastructureError

SECRET = "a-test-secret-of-at-least-32-characters-and-of-64-for-hs512-too!!!!"


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": "alice", "scope": "messages:write messages:read", "rooms": ["r1", "r2"],
        "aud": "merlin", "iss": "merlin", "iat": now, "exp": now + 600, **changes,
    }  # fmt: skip


def hs256(**changes: Any) -> str:
    return jwt.encode(claims(**changes), SECRET, algorithm="HS256")


async def test_a_good_token_names_the_caller_its_scopes_and_rooms() -> None:
    caller = await Verifier(AuthSettings(jwt_secret=SECRET)).caller(hs256())
    assert caller == Caller("alice", frozenset({WRITE, READ}), frozenset({"r1", "r2"}))
    assert caller.may(WRITE)
    assert not caller.may(ADMIN)
    assert caller.may_use("r1")
    assert not caller.may_use("r3")
    assert Caller("x", frozenset(), frozenset({ALL_ROOMS})).may_use("anything")


@pytest.mark.parametrize(
    ("token", "why"),
    [
        (hs256(exp=int(time.time()) - 120), "expired, past the leeway"),
        (hs256(aud="someone-else"), "another audience"),
        (hs256(iss="https://elsewhere"), "another issuer"),
        (jwt.encode({k: v for k, v in claims().items() if k != "exp"}, SECRET, algorithm="HS256"), "no exp"),
        (jwt.encode(claims(), "another-secret-of-at-least-32-characters!!", algorithm="HS256"), "other key"),
        (hs256()[:-4] + "AAAA", "tampered signature"),
        (jwt.encode(claims(), SECRET, algorithm="HS512"), "another algorithm"),
        ("not.a.token", "garbage"),
        (hs256(scope=["admin"]), "scope not a string"),
        (hs256(rooms="r1"), "rooms not a list"),
        (hs256(sub=""), "empty subject"),
    ],
)
async def test_tokens_that_are_not_good_are_refused(token: str, why: str) -> None:
    with pytest.raises(Unauthenticated):
        await Verifier(AuthSettings(jwt_secret=SECRET)).caller(token)


async def test_alg_none_is_refused() -> None:
    header = _b64({"alg": "none", "typ": "JWT"})
    token = f"{header}.{_b64(claims(scope='admin'))}."
    with pytest.raises(Unauthenticated):
        await Verifier(AuthSettings(jwt_secret=SECRET)).caller(token)


async def test_a_clock_a_little_behind_is_forgiven() -> None:
    caller = await Verifier(AuthSettings(jwt_secret=SECRET)).caller(hs256(exp=int(time.time()) - 5))
    assert caller.subject == "alice"


def test_settings_refuse_a_short_secret_and_two_ways_at_once() -> None:
    with pytest.raises(ValidationError, match="at least 32"):
        AuthSettings(jwt_secret="short")
    with pytest.raises(ValidationError, match="not both"):
        AuthSettings(jwt_secret=SECRET, jwks_url="http://127.0.0.1:1/jwks")
    with pytest.raises(InfrastructureError, match="MERLIN_AUTH_JWT_SECRET"):
        AuthSettings().require()
    assert AuthSettings(disabled=True).require().disabled
    assert AuthSettings(jwt_secret="", jwks_url="").verifies is False  # empty means unset


def test_minted_tokens_verify() -> None:
    token = mint(SECRET, "bob", scopes=[READ], rooms=["r9"], ttl_seconds=60)
    decoded = jwt.decode(token, SECRET, algorithms=["HS256"], audience="merlin", issuer="merlin")
    assert (decoded["sub"], decoded["scope"], decoded["rooms"]) == ("bob", READ, ["r9"])
    assert decoded["exp"] - decoded["iat"] == 60


# -- public keys from a JWKS URL --------------------------------------------------------------------

RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC = ec.generate_private_key(ec.SECP256R1())
ED = ed25519.Ed25519PrivateKey.generate()


def _jwk(private: Any, kid: str, alg: str) -> dict[str, Any]:
    algorithm: Any = {"RS256": RSAAlgorithm, "ES256": ECAlgorithm, "EdDSA": OKPAlgorithm}[alg]
    jwk: dict[str, Any] = json.loads(algorithm.to_jwk(private.public_key()))
    return {**jwk, "kid": kid, "alg": alg, "use": "sig"}


class Keys:
    """A real HTTP server publishing a JWKS document; counts how often it was fetched."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        keys = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                keys.fetches += 1
                body = json.dumps({"keys": keys.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"


@pytest.fixture
def keys() -> Iterator[Keys]:
    published = Keys()
    thread = threading.Thread(target=published.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield published
    finally:
        published.server.shutdown()
        published.server.server_close()


def signed(private: Any, kid: str, alg: str, **changes: Any) -> str:
    return jwt.encode(claims(**changes), private, algorithm=alg, headers={"kid": kid})


@pytest.mark.parametrize(("private", "alg"), [(RSA, "RS256"), (EC, "ES256"), (ED, "EdDSA")])
async def test_public_keys_from_a_jwks_url_verify_their_tokens(keys: Keys, private: Any, alg: str) -> None:
    keys.keys = [_jwk(private, "k1", alg)]
    verifier = Verifier(AuthSettings(jwks_url=keys.url))
    assert (await verifier.caller(signed(private, "k1", alg))).subject == "alice"
    assert (await verifier.caller(signed(private, "k1", alg, sub="bob"))).subject == "bob"
    assert keys.fetches == 1  # cached


async def test_an_unknown_key_id_fetches_the_keys_again_at_most_once_per_interval(keys: Keys) -> None:
    keys.keys = [_jwk(RSA, "old", "RS256")]
    verifier = Verifier(AuthSettings(jwks_url=keys.url, jwks_refresh_seconds=0))
    await verifier.caller(signed(RSA, "old", "RS256"))
    rotated = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    keys.keys.append(_jwk(rotated, "new", "RS256"))
    assert (await verifier.caller(signed(rotated, "new", "RS256"))).subject == "alice"
    assert keys.fetches == 2

    patient = Verifier(AuthSettings(jwks_url=keys.url, jwks_refresh_seconds=3600))
    for _ in range(5):
        with pytest.raises(Unauthenticated, match="unknown key id"):
            await patient.caller(signed(RSA, "nobody", "RS256"))
    assert keys.fetches == 3  # one fetch for five unknown kids


async def test_algorithm_confusion_is_refused(keys: Keys) -> None:
    keys.keys = [_jwk(RSA, "k1", "RS256")]
    verifier = Verifier(AuthSettings(jwks_url=keys.url))
    public_pem = RSA.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # HS256 "signed" with the public key as the secret: the classic confusion.
    forged = _hs256_with_raw_key(claims(scope="admin"), public_pem, kid="k1")
    with pytest.raises(Unauthenticated):
        await verifier.caller(forged)
    with pytest.raises(Unauthenticated):  # a key for RS256 does not verify an ES256 token
        await verifier.caller(signed(EC, "k1", "ES256"))
    with pytest.raises(Unauthenticated):  # nor HS256 tokens at all, with keys from a JWKS URL
        await verifier.caller(jwt.encode(claims(), SECRET, algorithm="HS256", headers={"kid": "k1"}))


def _b64(document: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()


def _hs256_with_raw_key(document: dict[str, Any], key: bytes, kid: str) -> str:
    signing_input = f"{_b64({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{_b64(document)}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


async def test_a_remembered_token_stops_working_when_it_expires() -> None:
    verifier = Verifier(AuthSettings(jwt_secret=SECRET, leeway_seconds=0))
    expires = int(time.time()) + 1
    soon = hs256(exp=expires)
    assert (await verifier.caller(soon)).subject == "alice"
    assert (await verifier.caller(soon)).subject == "alice"  # remembered
    await asyncio.sleep(max(0.0, expires - time.time()))  # until the clock passes exp
    with pytest.raises(Unauthenticated):
        await verifier.caller(soon)


async def test_it_remembers_a_bounded_number_of_tokens() -> None:
    verifier = Verifier(AuthSettings(jwt_secret=SECRET), remembered=2)
    for n in range(5):
        assert (await verifier.caller(hs256(sub=f"u{n}"))).subject == f"u{n}"
    assert len(verifier._verified) == 2


@pytest.mark.parametrize("space", ["\u00a0", "\u3000", "\u0085", "\u2028", "\u001f", "\u000b", "\t", "\n"])
async def test_scopes_are_separated_by_a_space_alone_and_other_whitespace_grants_nothing(space: str) -> None:
    caller = await Verifier(AuthSettings(jwt_secret=SECRET)).caller(hs256(scope=f"messages:read{space}admin"))
    assert caller.scopes == frozenset()
    assert not caller.may(ADMIN)
    assert not caller.may(READ)


async def test_scopes_around_several_spaces_still_count() -> None:
    caller = await Verifier(AuthSettings(jwt_secret=SECRET)).caller(hs256(scope="  messages:read   admin "))
    assert caller.scopes == frozenset({READ, ADMIN})


async def test_an_exp_that_is_not_a_number_is_refused() -> None:
    verifier = Verifier(AuthSettings(jwt_secret=SECRET))
    for exp in (str(int(time.time()) + 600), True, [int(time.time()) + 600]):
        with pytest.raises(Unauthenticated):
            await verifier.caller(hs256(exp=exp))


async def test_a_token_that_lives_longer_than_the_maximum_is_refused() -> None:
    verifier = Verifier(AuthSettings(jwt_secret=SECRET, max_token_lifetime_seconds=3600))
    assert (await verifier.caller(hs256(exp=int(time.time()) + 3600))).subject == "alice"
    with pytest.raises(Unauthenticated, match="longer than 3600 s"):
        await verifier.caller(hs256(exp=int(time.time()) + 3600 + 120))
