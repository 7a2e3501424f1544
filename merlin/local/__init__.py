"""A real Apache Kafka broker and PostgreSQL server on this machine, for development and tests."""

from merlin.local.kafka import LocalKafka
from merlin.local.postgres import LocalPostgres

__all__ = ["LocalKafka", "LocalPostgres"]
