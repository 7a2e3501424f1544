"""Whatever anyone writes to the settings topic, its readers read on: a record not of its kind's shape is
skipped and counted, a change a listener cannot apply is logged and counted, and nothing is raised."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any, cast

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from forwarder.controls import Controls
from forwarder.endpoint_catalog import EndpointCatalog
from forwarder.metrics import ForwarderMetrics
from kernel.control import ControlLog, ControlWriter
from kernel.producer import AsyncProducer
from kernel.settings import KafkaSettings
from webhooks.catalog import ENDPOINT, DefinitionUnreadable, check_record, decode, encode, shown
from webhooks.endpoints import Endpoint
from webhooks.secret_box import SecretBox, SecretUnreadable, new_key
from webhooks.url_safety import NO_INNER_NETWORKS

SECRET = "whsec_" + "A" * 32
BOX = SecretBox([new_key()])
KEYS = [
    "endpoint/hook", "paused/hook", "blocked/hook/room-1", "unblock/hook/room-1", "rates/hook/worker-1",
    "ping/worker-1", "other/thing", "endpoint", "", "paused/",
]  # fmt: skip

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def _valid_endpoint() -> dict[str, Any]:
    endpoint = Endpoint(name="hook", url="http://user:~pw~@hooks.example/in?key=~k~", secret=SECRET)
    return encode(endpoint, BOX, 1, datetime(2026, 12, 7, tzinfo=UTC))


VALID = {
    "endpoint": _valid_endpoint(),
    "paused": {"at": "2026-12-07T00:00:00Z", "by": "disabled", "reason": "r", "instance": "w"},
    "blocked": {"event_id": "e", "partition": 0, "offset": 1, "reason": "r", "attempts": [], "since": "s",
                "instance": "w"},
    "unblock": {"action": "retry", "event_id": "e", "at": "s"},
    "rates": {"delivered_per_s": 1.0, "failed_per_s": 0, "at": "s"},
    "ping": {"run": "r", "seq": 1, "at": "s"},
}  # fmt: skip


@st.composite
def records(draw: st.DrawFn) -> tuple[bytes, bytes | None]:
    """A key of any kind, with bytes, any JSON, or a valid record of its kind with fields changed."""
    key = draw(st.sampled_from(KEYS) | st.text(max_size=12))
    kind = key.partition("/")[0]
    base = VALID.get(kind, VALID["paused"])
    mutated = draw(
        st.dictionaries(st.sampled_from([*base, "definition", "url", "secrets"]), json_values, max_size=3)
    )
    value = draw(
        st.none()
        | st.binary(max_size=40)
        | json_values.map(orjson.dumps)
        | st.just(orjson.dumps({**base, **mutated}))
    )
    return key.encode(), value


class Producer:
    async def send(self, topic: str, value: bytes | None, key: bytes | None = None) -> tuple[int, int]:
        return 0, 0


def _readers() -> tuple[ControlLog, list[tuple[str, str]]]:
    skipped: list[tuple[str, str]] = []
    control = ControlLog(
        KafkaSettings(), shapes={ENDPOINT: check_record}, skipped=lambda *what: skipped.append(what)
    )
    metrics = ForwarderMetrics()
    EndpointCatalog(control, BOX, metrics, NO_INNER_NETWORKS)
    Controls(control, ControlWriter(cast(AsyncProducer, Producer()), control), "worker-1", metrics)
    return control, skipped


@settings(max_examples=200, deadline=None)
@given(st.lists(records(), min_size=1, max_size=20))
def test_any_records_leave_the_readers_standing_and_hold_only_values_of_their_kinds_shape(
    read: list[tuple[bytes, bytes | None]],
) -> None:
    control, _skipped = _readers()
    for raw_key, raw_value in read:
        change = control.decoded(raw_key, raw_value)
        if change is not None:
            control.apply([change])
    for name, value in control.values.items():
        assert isinstance(value, dict)
        if name.startswith(f"{ENDPOINT}/"):
            check_record(value)
            shown(name.partition("/")[2], value)  # what the admin API shows of it never fails
            with contextlib.suppress(DefinitionUnreadable, SecretUnreadable):  # and nothing else
                decode("hook", value, BOX)


def test_a_record_not_of_its_kinds_shape_is_skipped_and_the_value_it_would_replace_stays() -> None:
    control, skipped = _readers()
    change = control.decoded(b"paused/hook", orjson.dumps(VALID["paused"]))
    assert change is not None
    control.apply([change])
    for bad in [b"{", b"[1, 2]", b'"paused"', orjson.dumps({"at": 5}), orjson.dumps({"by": "x"})]:
        assert control.decoded(b"paused/hook", bad) is None
    assert control.values["paused/hook"] == VALID["paused"]
    assert [kind for kind, _ in skipped] == ["paused"] * 5
    assert control.decoded(b"paused/hook", None) == ("paused/hook", None)  # a tombstone always counts


def test_kinds_no_one_reads_are_one_label() -> None:
    control, skipped = _readers()
    for n in range(3):
        assert control.decoded(f"kind-{n}/x".encode(), b"not json") is None
    assert skipped == [("other", "not JSON")] * 3


def test_a_listener_that_fails_is_counted_and_the_others_still_hear() -> None:
    control, skipped = _readers()
    heard: list[str] = []

    def failing(name: str, _value: dict[str, Any] | None) -> None:
        raise KeyError(name)

    control.listen(failing)
    control.listen(lambda name, _value: heard.append(name))
    control.apply([("paused/hook", VALID["paused"]), ("paused/other", VALID["paused"])])
    assert heard == ["paused/hook", "paused/other"]
    assert skipped == [("paused", "not applied")] * 2


def test_an_endpoint_record_holds_neither_the_urls_credentials_nor_its_query_in_the_clear() -> None:
    record = VALID["endpoint"]
    text = orjson.dumps(record).decode()
    # "~" is outside the sealed text's base64 alphabet: a ciphertext cannot hold these by chance.
    assert "~pw~" not in text
    assert "~k~" not in text
    endpoint = decode("hook", record, BOX)
    assert str(endpoint.url) == "http://user:~pw~@hooks.example/in?key=~k~"
