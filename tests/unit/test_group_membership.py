"""How a forwarder joins its groups under each protocol (pure configuration; no broker)."""

from __future__ import annotations

import pytest

from forwarder.settings import ForwarderSettings
from forwarder.worker import Forwarder
from kernel.settings import KafkaSettings
from read_store.settings import ReadStoreSettings


def _forwarder(**settings: object) -> Forwarder:
    return Forwarder(
        ForwarderSettings(metrics_port=0, **settings),  # type: ignore[arg-type]
        KafkaSettings(),
        ReadStoreSettings(url="sqlite:///unused.db"),
        endpoints=[],
    )


def test_under_the_consumer_protocol_timing_is_the_groups_not_the_clients() -> None:
    forwarder = _forwarder(session_timeout_ms=6000)
    config = forwarder.consumer_config("crm")
    assert config["group.protocol"] == "consumer"
    assert config["group.id"] == "merlin-forwarder.endpoint.crm"
    # librdkafka refuses a consumer-protocol client given any of these.
    assert not {"session.timeout.ms", "heartbeat.interval.ms", "partition.assignment.strategy"} & set(config)
    assert forwarder.group_configs() == {
        "consumer.session.timeout.ms": "6000",
        "consumer.heartbeat.interval.ms": "500",
    }


def test_the_classic_protocol_carries_timing_and_strategy_on_the_client() -> None:
    config = _forwarder(group_protocol="classic", assignment_strategy="range").consumer_config()
    assert config["group.protocol"] == "classic"
    assert config["partition.assignment.strategy"] == "range"
    assert (config["session.timeout.ms"], config["heartbeat.interval.ms"]) == (10_000, 500)


@pytest.mark.parametrize(("session", "heartbeat"), [(1000, 333), (1500, 500), (60_000, 500)])
def test_the_default_heartbeat_is_half_a_second_or_a_third_of_a_short_session(
    session: int, heartbeat: int
) -> None:
    assert ForwarderSettings(session_timeout_ms=session).heartbeat_ms == heartbeat
