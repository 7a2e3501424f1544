"""What a failed write or read means: never written, unknown, or the store being away."""

from __future__ import annotations

import sqlite3

import asyncpg
import pytest
from confluent_kafka import KafkaError
from sqlalchemy.exc import IntegrityError, OperationalError

from kernel.producer import BrokerUnavailable, OutcomeUnknown, RecordTooLarge, delivery_failure
from read_store.outages import is_outage


@pytest.mark.parametrize(
    ("code", "meaning"),
    [
        (KafkaError.NOT_ENOUGH_REPLICAS, BrokerUnavailable),  # refused before the append
        (KafkaError.TOPIC_AUTHORIZATION_FAILED, BrokerUnavailable),
        (KafkaError._QUEUE_FULL, BrokerUnavailable),
        (KafkaError.MSG_SIZE_TOO_LARGE, RecordTooLarge),
        (KafkaError._MSG_TIMED_OUT, OutcomeUnknown),  # sent perhaps, answer lost
        (KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND, OutcomeUnknown),  # on the leader already
        (KafkaError.REQUEST_TIMED_OUT, OutcomeUnknown),
        (KafkaError._TRANSPORT, OutcomeUnknown),
        (KafkaError.NOT_LEADER_FOR_PARTITION, OutcomeUnknown),
    ],
)
def test_only_answers_that_say_so_count_as_not_written(code: int, meaning: type[Exception]) -> None:
    failure = delivery_failure(KafkaError(code))
    assert type(failure) is meaning


def test_a_lost_or_refused_store_is_an_outage_and_a_bad_query_is_not() -> None:
    assert is_outage(ConnectionRefusedError(111, "refused"))
    assert is_outage(asyncpg.CannotConnectNowError("the database system is starting up"))
    assert is_outage(asyncpg.AdminShutdownError("terminating connection due to administrator command"))
    assert is_outage(OperationalError("SELECT 1", {}, sqlite3.OperationalError("database is locked")))
    assert not is_outage(IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE constraint failed")))
    assert not is_outage(asyncpg.UndefinedTableError("relation does not exist"))
    assert not is_outage(ValueError("a bug"))
