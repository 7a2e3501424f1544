"""Settings shared by every merlin service, read from ``MERLIN_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import TypeAlias

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parents[1]

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
    # Extra librdkafka properties, e.g. for SASL: MERLIN_KAFKA_CLIENT_CONFIG='{"security.protocol": "SSL"}'
    client_config: dict[str, str] = Field(default_factory=dict)

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
        return {"bootstrap.servers": self.bootstrap_servers, **self.client_config, **(overrides or {})}
