"""Endpoint definitions as the settings topic keeps them: sealed secrets, rotation, plans."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from webhooks.catalog import (
    DefinitionUnreadable,
    SecretRequired,
    comparable,
    comparable_view,
    decode,
    encode,
    merged,
    plan,
    resealed,
    shown,
)
from webhooks.endpoints import Endpoint, EndpointSpec
from webhooks.secret_box import SecretBox, SecretUnreadable, new_key

OLD, NEW = "whsec_" + "A" * 32, "whsec_" + "B" * 32
NOW = datetime(2026, 11, 24, 12, tzinfo=UTC)
BOX = SecretBox([new_key()])


def _spec(**fields: object) -> EndpointSpec:
    return EndpointSpec.model_validate({"url": "https://hooks.example/in", **fields})


def test_a_record_round_trips_and_holds_no_secret_in_the_clear() -> None:
    endpoint = merged("crm", _spec(secret=OLD, timeout=2.5), None, NOW)
    record = encode(endpoint, BOX, 1, NOW)
    assert OLD not in orjson.dumps(record).decode()
    assert decode("crm", record, BOX) == endpoint
    assert endpoint.added_at == NOW


def test_what_is_shown_names_secrets_by_fingerprint_only() -> None:
    record = encode(merged("crm", _spec(secret=OLD), None, NOW), BOX, 3, NOW)
    view = shown("crm", record)
    assert OLD not in orjson.dumps(view).decode()
    assert view["secret"]["fingerprint"].startswith("sha256:")
    assert (view["name"], view["version"], view["timeout"]) == ("crm", 3, 5.0)


def test_a_record_under_an_unknown_key_or_schema_is_unreadable() -> None:
    record = encode(merged("crm", _spec(secret=OLD), None, NOW), BOX, 1, NOW)
    with pytest.raises(SecretUnreadable):
        decode("crm", record, SecretBox([new_key()]))
    with pytest.raises(DefinitionUnreadable):
        decode("crm", {**record, "schema": 3}, BOX)
    with pytest.raises(DefinitionUnreadable):
        decode("crm", {**record, "url": {**record["url"], "sealed": BOX.seal("not a url")}}, BOX)


def test_a_record_of_schema_1_with_its_url_in_the_clear_is_read_and_resealed_out_of_it() -> None:
    endpoint = merged("crm", _spec(url="https://u:PASS-1@hooks.example/in?k=QS-2", secret=OLD), None, NOW)
    record = encode(endpoint, BOX, 4, NOW)
    old = {key: value for key, value in record.items() if key != "url"}
    old = {**old, "schema": 1, "definition": {**record["definition"], "url": str(endpoint.url)}}
    assert decode("crm", old, BOX) == endpoint
    assert shown("crm", old)["url_fingerprint"] == shown("crm", record)["url_fingerprint"]
    again = resealed(old, BOX)
    assert again["schema"] == 2
    assert "PASS-1" not in orjson.dumps(again).decode()
    assert "QS-2" not in orjson.dumps(again).decode()
    assert decode("crm", again, BOX) == endpoint
    assert shown("crm", again)["url"] == "https://hooks.example/in?…"


def test_a_new_secret_keeps_the_old_one_signing_for_its_grace_period() -> None:
    first = merged("crm", _spec(secret=OLD), None, NOW)
    rotated = merged("crm", _spec(secret=NEW, secret_grace_seconds=60), first, NOW)
    assert rotated.signing_secrets(NOW) == [NEW, OLD]
    assert rotated.signing_secrets(NOW + timedelta(seconds=61)) == [NEW]
    assert rotated.added_at == first.added_at
    # The record carries the rotation, so every forwarder signs alike.
    assert decode("crm", encode(rotated, BOX, 2, NOW), BOX).signing_secrets(NOW) == [NEW, OLD]
    # Later, an unrelated change drops what has expired.
    later = merged("crm", _spec(timeout=1.0), rotated, NOW + timedelta(seconds=61))
    assert (later.secret, later.old_secrets) == (NEW, ())


def test_a_secret_left_out_is_kept_and_a_new_endpoint_needs_one() -> None:
    first = merged("crm", _spec(secret=OLD), None, NOW)
    assert merged("crm", _spec(timeout=1.0), first, NOW).secret == OLD
    with pytest.raises(SecretRequired):
        merged("crm", _spec(), None, NOW)


def test_a_plan_names_what_it_creates_changes_and_deletes() -> None:
    def endpoint(name: str, **fields: object) -> Endpoint:
        return merged(name, _spec(**{"secret": OLD, **fields}), None, NOW)

    current = {n: comparable(endpoint(n)) for n in "abc"}
    wanted = {
        "a": comparable(endpoint("a")),
        "b": comparable(endpoint("b", timeout=1.0, secret=NEW)),
        "d": comparable(endpoint("d")),
    }
    result = plan(current, wanted)
    assert (result.create, result.update, result.delete, result.unchanged) == (
        ["d"],
        {"b": ["secret", "timeout"]},
        ["c"],
        ["a"],
    )
    assert result.lines() == ["+ d", "~ b: secret, timeout", "- c"]
    assert plan(current, wanted, deletes=False).delete == []


def test_a_definition_compares_alike_as_given_and_as_shown() -> None:
    endpoint = merged("crm", _spec(secret=OLD, event_types=["MessageUpdated", "MessageCreated"]), None, NOW)
    view = shown("crm", encode(endpoint, BOX, 1, NOW))
    assert comparable_view(view) == comparable(endpoint)
