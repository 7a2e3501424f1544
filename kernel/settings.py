"""Settings shared by every merlin service, read from ``MERLIN_*`` environment variables."""

from __future__ import annotations

from typing import Annotated, Literal, TypeAlias
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ClientConfig: TypeAlias = dict[str, str | int | float | bool]


class KafkaSettings(BaseSettings):
    """Where the broker is and which topics merlin uses (``MERLIN_KAFKA_*``)."""

    model_config = SettingsConfigDict(env_prefix="MERLIN_KAFKA_", extra="ignore")

    bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        description="The brokers every Kafka client of merlin starts from: `host:port`, comma-separated.",
    )
    events_topic: str = Field(
        default="merlin.message-events", description="The events topic, the system of record (key: the room)."
    )
    dead_letter_topic: str = Field(
        default="merlin.message-events.dlq", description="Poison events and events an endpoint never took."
    )
    settings_topic: str = Field(
        default="merlin.settings", description="Live settings, endpoints and operators' controls (compacted)."
    )
    partitions: int = Field(
        default=6, ge=1, description="Partitions of the topics `merlin topics create` makes."
    )
    replication_factor: int = Field(
        default=1,
        ge=1,
        description="Replicas of the topics merlin creates: 3 on a cluster of three brokers or more "
        "(`merlin topics create` warns).",
    )
    min_insync_replicas: int | None = Field(
        default=None,
        ge=1,
        description="Replicas that must have a write before it is acknowledged; unset, "
        "min(2, `MERLIN_KAFKA_REPLICATION_FACTOR`).",
    )
    retention_ms: int = Field(
        default=-1,
        ge=-1,
        description="How long the events and dead-letter topics keep a record; -1: for ever, as the system "
        "of record must.",
    )
    retention_bytes: int = Field(
        default=-1, ge=-1, description="How much of each partition of those topics is kept; -1: all of it."
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT",
        description="How this service reaches the brokers: plaintext or TLS, with SASL or not.",
    )
    sasl_mechanism: Literal["SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = Field(
        default="SCRAM-SHA-512", description="The SASL mechanism of the `SASL_*` protocols."
    )
    sasl_username: str | None = Field(
        default=None,
        description="This service's Kafka user, required with `SASL_*` (`merlin acls apply` makes one per "
        "service).",
    )
    sasl_password: SecretStr | None = Field(default=None, description="The password of that user.")
    client_config: dict[str, str] = Field(
        default_factory=dict,
        description="Extra librdkafka properties as a JSON object, e.g. TLS files: "
        '`{"ssl.ca.location": "/ca.pem"}`.',
    )
    statistics_interval_ms: int = Field(
        default=15_000,
        ge=0,
        description="How often each long-lived client reports librdkafka's statistics (the `merlin_kafka_*` "
        "gauges); 0: never.",
    )

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

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Every service's log level (in any case)."
    )
    access: bool = Field(
        default=True,
        description="One line per HTTP request in the APIs: route, method, status, `duration_ms`, `sub`, "
        "`request_id`.",
    )

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value


class ApiServing(BaseModel):
    """What the settings of each HTTP API share: its worker processes and the listener beside them.

    Fields only, read under each API's own prefix (``MERLIN_WRITE_API_WORKERS``…); not a settings
    class of its own.
    """

    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Processes accepting on its socket (`--workers N`), each its own interpreter.",
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description="Where `/metrics` (Prometheus), `/healthz` and `/readyz` answer without a token; with "
        "workers, their parent answers for all of them. Keep it on an internal address.",
    )


_DEFAULT_PORTS = {"http": 80, "https": 443}


def cors_origin(value: str) -> str:
    """``value`` as a browser writes an origin (``scheme://host[:port]``: lower case, no default port);
    a ValueError saying what is wrong when it is no origin."""
    text = value.strip()
    if text in ("*", "null"):
        raise ValueError(f"{text} is not taken: list each origin, e.g. http://127.0.0.1:8084")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not an origin ({exc}), e.g. http://127.0.0.1:8084") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError("an origin is http:// or https:// and a host, e.g. http://127.0.0.1:8084")
    if parts.username is not None or parts.password is not None:
        raise ValueError("an origin has no user or password")
    if parts.path or parts.query or parts.fragment or text.endswith(("?", "#")):
        raise ValueError(f"an origin has no path, query or fragment: {scheme}://{parts.netloc}")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"  # an IPv6 address, as the browser writes it
    return f"{scheme}://{host}" if port in (None, _DEFAULT_PORTS[scheme]) else f"{scheme}://{host}:{port}"


Origin = Annotated[str, AfterValidator(cors_origin)]


class CorsServing(BaseModel):
    """The CORS setting of an API that browser pages may call (fields only, read under the API's prefix)."""

    cors_origins: list[Origin] = Field(
        default_factory=list,
        description="Origins of browser pages that may call this API, as a JSON list of exact origins, "
        'e.g. `["https://chat.example.com"]`; empty: none (`merlin dev`: its live-rooms page). Tokens '
        "still go in the `Authorization` header: no cookie or other credential is allowed.",
    )
