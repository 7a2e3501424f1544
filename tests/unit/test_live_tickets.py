"""Live tickets: signed, short-lived, for some of a token's rooms, accepted once per process."""

from __future__ import annotations

import time

import pytest
from pydantic import SecretStr

from kernel.auth import READ, WRITE, Caller
from read_api.tickets import Tickets

SECRET = SecretStr("s" * 40)
ALICE = Caller("alice", frozenset({READ, WRITE}), frozenset({"a", "b"}), time.time() + 3600)


def scope(path: str, ticket: str) -> dict[str, object]:
    return {"type": "http", "path": path, "query_string": f"rooms=a&ticket={ticket}".encode()}


def test_a_ticket_stands_for_its_caller_and_rooms_to_read_once() -> None:
    tickets = Tickets.keyed(None, SECRET, 30)
    ticket = tickets.issue(ALICE, ["a"])
    caller = tickets.caller(scope("/v1/rooms/a/live", ticket))
    assert caller is not None
    assert (caller.subject, caller.rooms, caller.scopes) == ("alice", frozenset({"a"}), frozenset({READ}))
    assert caller.expires == ALICE.expires
    assert tickets.caller(scope("/v1/rooms/a/live", ticket)) is None  # used


def test_every_process_with_the_key_accepts_a_ticket_once() -> None:
    issuer, other = Tickets.keyed(None, SECRET, 30), Tickets.keyed(None, SECRET, 30)
    ticket = issuer.issue(ALICE, ["a", "b"])
    assert other.accept(ticket) is not None
    assert other.accept(ticket) is None
    assert Tickets.keyed(None, SecretStr("t" * 40), 30).accept(issuer.issue(ALICE, ["a"])) is None
    keyed = Tickets.keyed(SecretStr("k" * 32), SECRET, 30)
    assert issuer.accept(keyed.issue(ALICE, ["a"])) is None


@pytest.mark.parametrize(
    "path", ["/v1/rooms/a/messages", "/v1/live/tickets", "/v1/rooms/a/live/x", "/metrics"]
)
def test_a_ticket_opens_nothing_but_the_live_routes(path: str) -> None:
    tickets = Tickets.keyed(None, SECRET, 30)
    assert tickets.caller(scope(path, tickets.issue(ALICE, ["a"]))) is None


def test_a_ticket_expired_tampered_or_of_an_expired_token_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    tickets = Tickets.keyed(None, SECRET, 30)
    ticket = tickets.issue(ALICE, ["a"])
    body, _, signature = ticket.partition(".")
    assert tickets.accept(f"{body}x.{signature}") is None
    assert tickets.accept(f"{body}.{signature[:-2]}") is None
    assert tickets.accept("garbage") is None
    assert tickets.accept("a.b") is None
    soon = Caller("alice", frozenset({READ}), frozenset({"a"}), time.time() + 5)
    short = tickets.issue(soon, ["a"])
    later = time.time() + 31
    monkeypatch.setattr(time, "time", lambda: later)
    assert tickets.accept(ticket) is None
    assert tickets.accept(short) is None
