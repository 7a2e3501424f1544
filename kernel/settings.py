"""Settings shared by every merlin service, read from ``MERLIN_*`` environment variables."""

from __future__ import annotations

from typing import Literal, TypeAlias

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ClientConfig: TypeAlias = dict[str, str | int | float | bool]


class KafkaSettings(BaseSettings):
    """Where the broker is and which topics merlin uses (``MERLIN_KAFKA_*``)."""

    model_config = SettingsConfigDict(env_prefix="MERLIN_KAFKA_", extra="ignore")

    bootstrap_servers: str = "127.0.0.1:9092"
    events_topic: str = "merlin.message-events"
    dead_letter_topic: str = "merlin.message-events.dlq"
    settings_topic: str = "merlin.settings"
    partitions: int = Field(default=6, ge=1)
    replication_factor: int = Field(default=1, ge=1)
    # Replicas that must have a write before it is acknowledged; default min(2, replication).
    min_insync_replicas: int | None = Field(default=None, ge=1)
    # The events and dead-letter topics are the system of record: kept for ever by default.
    retention_ms: int = Field(default=-1, ge=-1)
    retention_bytes: int = Field(default=-1, ge=-1)
    # Who this service is to the broker: SASL/SCRAM (or PLAIN) over plaintext or TLS.
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    # Extra librdkafka properties, e.g. for TLS: MERLIN_KAFKA_CLIENT_CONFIG='{"ssl.ca.location": "/ca.pem"}'
    client_config: dict[str, str] = Field(default_factory=dict)
    # How often each long-lived client reports librdkafka's statistics (kernel.kafka_stats); 0: never.
    statistics_interval_ms: int = Field(default=15_000, ge=0)

    @property
    def min_insync(self) -> int:
        return self.min_insync_replicas or min(2, self.replication_factor)

    @model_validator(mode="after")
    def _consistent(self) -> KafkaSettings:
        if self.min_insync > self.replication_factor:
            raise ValueError(
                f"MERLIN_KAFKA_MIN_INSYNC_REPLICAS ({self.min_insync}) is above "
                f"MERLIN_KAFKA_REPLICATION_FACTOR ({self.replication_factor}): no write could succeed"
            )
        if self.security_protocol.startswith("SASL_") and not (self.sasl_username and self.sasl_password):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs MERLIN_KAFKA_SASL_USERNAME "
                "and MERLIN_KAFKA_SASL_PASSWORD"
            )
        return self

    @property
    def topics(self) -> list[str]:
        return [self.events_topic, self.dead_letter_topic, self.settings_topic]

    def namespaced(self, prefix: str, **changes: object) -> KafkaSettings:
        """A copy whose three topics are named after ``prefix`` (a test's or a benchmark's own)."""
        return self.model_copy(
            update={
                "events_topic": f"{prefix}.events",
                "dead_letter_topic": f"{prefix}.dlq",
                "settings_topic": f"{prefix}.settings",
                **changes,
            }
        )

    def client(self, overrides: ClientConfig | None = None) -> ClientConfig:
        """A librdkafka configuration for these settings, with ``overrides`` on top."""
        security: ClientConfig = {}
        if self.security_protocol != "PLAINTEXT":
            security["security.protocol"] = self.security_protocol
        if self.security_protocol.startswith("SASL_") and self.sasl_username and self.sasl_password:
            security["sasl.mechanism"] = self.sasl_mechanism
            security["sasl.username"] = self.sasl_username
            security["sasl.password"] = self.sasl_password.get_secret_value()
        return {
            "bootstrap.servers": self.bootstrap_servers,
            **security,
            **self.client_config,
            **(overrides or {}),
        }


class LoggingSettings(BaseSettings):
    """What every service logs (``MERLIN_LOG_*``): the level, and the HTTP services' access log."""

    model_config = SettingsConfigDict(env_prefix="MERLIN_LOG_", extra="ignore")

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # One line per HTTP request (route, method, status, duration, caller, request id).
    access: bool = True

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value
