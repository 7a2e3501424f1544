"""A real Apache Kafka broker (or cluster) and PostgreSQL server on this machine, for dev and tests."""

from merlin.local.kafka import LocalKafka, LocalKafkaCluster
from merlin.local.postgres import LocalPostgres

__all__ = ["LocalKafka", "LocalKafkaCluster", "LocalPostgres"]
