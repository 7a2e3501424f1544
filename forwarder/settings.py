"""Settings of the forwarder worker (``MERLIN_FORWARDER_*``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from forwarder.supervisor import BackoffPolicy


class ForwarderSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MERLIN_FORWARDER_", extra="ignore")

    group_id: str = "merlin-forwarder"
    # Static group membership (Kafka's group.instance.id): a worker restarted under the same
    # id takes its partitions back at once instead of after the session timeout.
    instance_id: str | None = Field(default=None, min_length=1, max_length=249)
    # Under a backlog, bigger batches mean fewer transactions and fewer index pages written per event.
    batch_max: int = Field(default=5000, ge=1)
    # How long one poll waits for records; also how fast a stop request is noticed.
    poll_timeout: float = Field(default=0.2, gt=0)
    # With batches waiting for the store, the consumer stops asking for more; their partitions
    # are paused only once the queue has stayed full this long (a store that stopped, not a
    # busy one): pausing drops what librdkafka has already fetched for them.
    backlog_pause_after: float = Field(default=1.0, ge=0)
    # "consumer": Kafka's consumer group protocol (KIP-848): the broker assigns, a rebalance moves
    # only what changes owner and waits on no other member; the session timeout and heartbeat
    # below become the group's configs on the broker. "classic": the JoinGroup protocol with
    # assignment_strategy, for brokers older than 4.0 or that keep group configs out of reach.
    group_protocol: Literal["consumer", "classic"] = "consumer"
    session_timeout_ms: int = Field(default=10_000, ge=1000)
    # How often a member tells the coordinator it lives; at most a third of the session timeout
    # (the default: the smaller of 0.5 s and that third). Under the consumer group protocol a
    # partition moves on heartbeats: its owner hears to let it go on one, its next owner to take
    # it on the next, so this bounds how long a rebalance holds a moved partition.
    heartbeat_interval_ms: int | None = Field(default=None, ge=100)
    # Classic protocol only: cooperative-sticky moves only the partitions that change owner on a
    # rebalance; "range" (eager) revokes every partition of every member first.
    assignment_strategy: Literal["cooperative-sticky", "range", "roundrobin"] = "cooperative-sticky"
    max_poll_interval_ms: int = Field(default=300_000, ge=1000)
    # /metrics (Prometheus), /healthz and /readyz on http://metrics_host:metrics_port; port 0 turns them off.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(default=9102, ge=0, le=65535)
    migrate_on_start: bool = False
    # Worker processes under one parent (`merlin forwarder --processes N`): members of the same
    # groups, each its own interpreter, so every core works; more than a group's partitions idle.
    processes: int = Field(default=1, ge=1, le=64)
    # Downstream endpoints (TOML or YAML); none when unset.
    # One name, never the field's own as well: a choice of "endpoints_file" would read ENDPOINTS_FILE.
    endpoints_file: Path | None = Field(default=None, validation_alias="MERLIN_ENDPOINTS_FILE")
    # The settings subscription checks itself: every settings_ping_every s the worker writes a ping
    # to itself through the settings topic; one not read back within settings_ping_within s renews
    # the worker's reader of that topic (/readyz says "stalled" until a ping comes back).
    settings_ping_every: float = Field(default=3.0, gt=0)
    settings_ping_within: float = Field(default=10.0, gt=0)
    # How often each worker reports its delivery and error rates per endpoint (settings topic).
    report_every: float = Field(default=5.0, gt=0)
    # The supervisors of the flow and of each stage.
    restart_min_backoff: float = Field(default=0.5, gt=0)
    restart_max_backoff: float = Field(default=30.0, gt=0)
    restart_random_factor: float = Field(default=0.2, ge=0)
    restart_reset_after: float = Field(default=30.0, gt=0)
    # More flow restarts than this within restart_window seconds: exit non-zero for the process manager.
    max_restarts: int | None = Field(default=None, ge=0)
    restart_window: float = Field(default=60.0, gt=0)

    @property
    def heartbeat_ms(self) -> int:
        return self.heartbeat_interval_ms or max(100, min(500, self.session_timeout_ms // 3))

    @model_validator(mode="after")
    def _heartbeat_within_session(self) -> ForwarderSettings:
        if self.heartbeat_ms * 3 > self.session_timeout_ms:
            raise ValueError(
                f"MERLIN_FORWARDER_HEARTBEAT_INTERVAL_MS ({self.heartbeat_ms}) is above a third of "
                f"MERLIN_FORWARDER_SESSION_TIMEOUT_MS ({self.session_timeout_ms})"
            )
        if self.settings_ping_within <= self.settings_ping_every:
            raise ValueError(
                f"MERLIN_FORWARDER_SETTINGS_PING_WITHIN ({self.settings_ping_within:g}) must be above "
                f"MERLIN_FORWARDER_SETTINGS_PING_EVERY ({self.settings_ping_every:g})"
            )
        return self

    def restart_policy(self, max_restarts: int | None = None) -> BackoffPolicy:
        """The supervisors' restart policy; past ``max_restarts`` in the window, give up."""
        return BackoffPolicy(
            min_backoff=self.restart_min_backoff,
            max_backoff=self.restart_max_backoff,
            random_factor=self.restart_random_factor,
            reset_after=self.restart_reset_after,
            max_restarts=max_restarts,
            within=self.restart_window,
        )
