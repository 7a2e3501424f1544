"""Settings of the forwarder worker (``MERLIN_FORWARDER_*``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from forwarder.supervisor import BackoffPolicy


class ForwarderSettings(BaseSettings):
    """The forwarder worker (``MERLIN_FORWARDER_*``)."""

    model_config = SettingsConfigDict(env_prefix="MERLIN_FORWARDER_", extra="ignore")

    group_id: str = Field(
        default="merlin-forwarder",
        description="The projection's consumer group; each endpoint's is `<group>.endpoint.<name>`.",
    )
    instance_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=249,
        description="Static group membership (Kafka's `group.instance.id`): a worker restarted under the "
        "same id (e.g. a StatefulSet pod's name) takes its partitions back at once, without a rebalance. "
        "The price: while it is down (a crash, a slow restart, a node drained), its partitions wait for "
        "it until the session timeout passes, and under the consumer protocol a worker restarted after a "
        "crash is refused its id until then (it retries on its backoff). Use it with short, supervised "
        "restarts; leave it unset when workers come and go (docs/operations.md).",
    )
    batch_max: int = Field(
        default=5000,
        ge=1,
        description="Most records in a projected batch (one transaction); a batch is what has arrived, up "
        "to this. Under a backlog, bigger batches mean fewer transactions and fewer index pages written "
        "per event.",
    )
    poll_timeout: float = Field(
        default=0.2,
        gt=0,
        description="How long one poll waits for records (s); also how fast a stop request is noticed.",
    )
    backlog_pause_after: float = Field(
        default=1.0,
        ge=0,
        description="With batches waiting for the store, the consumer asks for no more; their partitions "
        "are paused only once the queue has stayed full this long (s): a store that stopped, not a busy "
        "one, as a pause drops what librdkafka has fetched ahead.",
    )
    group_protocol: Literal["consumer", "classic"] = Field(
        default="consumer",
        description="`consumer`: Kafka's consumer group protocol (KIP-848): the broker assigns, a rebalance "
        "moves only what changes owner and waits on no other member; the session timeout and heartbeat "
        "become the group's configs on the broker (the forwarder's user needs `ALTER_CONFIGS` on its "
        "groups, which `merlin acls apply` grants; the brokers' `group.consumer.min.session.timeout.ms` "
        "and `group.consumer.min.heartbeat.interval.ms` must allow them, 45 s and 5 s by Kafka's defaults: "
        "a refused group logs `group_configs_refused` and keeps the broker's). `classic`: the JoinGroup "
        "protocol with `MERLIN_FORWARDER_ASSIGNMENT_STRATEGY`, for brokers before 4.0 or that keep group "
        "configs out of reach. A running group switches from classic to consumer as its workers restart "
        "(Kafka converts the group).",
    )
    session_timeout_ms: int = Field(
        default=10_000,
        ge=1000,
        description="How long the group waits for a silent (killed) worker before giving its partitions "
        "to others.",
    )
    heartbeat_interval_ms: int | None = Field(
        default=None,
        ge=100,
        description="How often a worker tells the coordinator it lives, at most a third of the session "
        "timeout; unset, the smaller of 500 and that third. Under the consumer protocol a partition moves "
        "on heartbeats, so this bounds how long a rebalance holds a moved partition.",
    )
    assignment_strategy: Literal["cooperative-sticky", "range", "roundrobin"] = Field(
        default="cooperative-sticky",
        description="Classic protocol only: `cooperative-sticky` moves only the partitions that change owner "
        "on a rebalance; `range` and `roundrobin` (eager) revoke every partition of every member first. "
        "A classic group cannot mix them: switching means stopping every worker of the group first.",
    )
    max_poll_interval_ms: int = Field(
        default=300_000,
        ge=1000,
        description="Longest time between two polls before the group takes a worker's partitions away "
        "(librdkafka's `max.poll.interval.ms`).",
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        description="Where `/metrics` (Prometheus), `/healthz` and `/readyz` answer. Keep it on an internal "
        "address.",
    )
    metrics_port: int = Field(
        default=9102,
        ge=0,
        le=65535,
        description="Their port; 0 turns that listener off. With `--processes N`, process i answers on this "
        "port + i.",
    )
    migrate_on_start: bool = Field(
        default=False, description="Migrate the read store's schema before consuming."
    )
    processes: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Worker processes under one parent (`merlin forwarder --processes N`): members of the "
        "same groups, each its own interpreter, so every core works; more than a group's partitions idle.",
    )
    endpoints_file: Path | None = Field(
        default=None,
        # One name, never the field's own as well: a choice of "endpoints_file" would read ENDPOINTS_FILE.
        validation_alias="MERLIN_ENDPOINTS_FILE",
        description="Endpoints (TOML or YAML) the forwarder and the admin API define in the settings topic "
        "at start; the others are defined through the admin API.",
    )
    settings_ping_every: float = Field(
        default=3.0,
        gt=0,
        description="The settings subscription checks itself: every this many seconds a worker writes a "
        "ping to itself through the settings topic.",
    )
    settings_ping_within: float = Field(
        default=10.0,
        gt=0,
        description="A ping not read back within this many seconds renews the worker's reader and pinger "
        "of the settings topic (new connections), logs `settings_subscription_renewed` and counts it; "
        "`/readyz` says `stalled` until a ping comes back.",
    )
    report_every: float = Field(
        default=5.0,
        gt=0,
        description="How often (s) each worker reports its delivery and error rates per endpoint through "
        "the settings topic.",
    )
    restart_min_backoff: float = Field(
        default=0.5,
        gt=0,
        description="The first restart delay (s) of the supervisors of the flow and its stages.",
    )
    restart_max_backoff: float = Field(
        default=30.0, gt=0, description="The longest restart delay (s) the supervisors' delays grow to."
    )
    restart_random_factor: float = Field(
        default=0.2, ge=0, description="Jitter: each delay is scaled by a random factor in [1, 1 + this]."
    )
    restart_reset_after: float = Field(
        default=30.0,
        gt=0,
        description="A child that has run this long (s) since its restart starts its delays afresh.",
    )
    max_restarts: int | None = Field(
        default=None,
        ge=0,
        description="More flow restarts than this within `MERLIN_FORWARDER_RESTART_WINDOW`: exit 1, for the "
        "process manager; unset, never give up.",
    )
    restart_window: float = Field(
        default=60.0, gt=0, description="The window (s) in which `MERLIN_FORWARDER_MAX_RESTARTS` counts."
    )

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
