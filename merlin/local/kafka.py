"""Apache Kafka on this machine from Maven jars: one KRaft node, or a cluster of them.

Each node is a combined controller + broker. Maven resolves the classpath from
``merlin/local/kafka_broker/pom.xml`` (package data, installed with merlin) into
a cache keyed by the pom's content, so a second start needs no network.
``LocalKafkaCluster`` runs several nodes that form one controller quorum, so
replication factor 3 needs no Docker.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from importlib.resources import as_file, files
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

from kernel.errors import InfrastructureError, ToolMissing
from kernel.settings import ClientConfig, KafkaSettings
from merlin.local import processes
from merlin.local.settings import LocalSettings

# The broker's classpath for Maven (pom.xml) and its logging (log4j2.yaml), shipped as package data.
BROKER_FILES = files("merlin.local") / "kafka_broker"
_MARKER = "kafka.Kafka"
_MIN_JAVA = 17
_HOST = "127.0.0.1"


@dataclass(frozen=True)
class KafkaStatus:
    running: bool
    bootstrap: str
    pid: int | None
    managed: bool  # started by this merlin (a pid file in its var dir), not found answering on the port

    def describe(self) -> str:
        """One line for an operator."""
        if not self.running:
            return f"kafka: not running (would listen on {self.bootstrap})"
        owner = f"pid {self.pid}" if self.managed else "not started by this merlin"
        return f"kafka: running at {self.bootstrap} ({owner})"


class LocalKafka:
    """Fetch, start, stop and inspect one local broker listening on ``port``.

    ``properties`` go over the broker's defaults (a secured broker's listeners, say), and
    ``client`` is what a client needs to be answered by it (its credentials).
    """

    def __init__(
        self,
        settings: LocalSettings | None = None,
        port: int | None = None,
        properties: dict[str, str] | None = None,
        client: ClientConfig | None = None,
        *,
        node_id: int = 1,
        voters: str | None = None,
        cluster_id: str | None = None,
        state_dir: Path | None = None,
    ) -> None:
        self.settings = settings or LocalSettings()
        self.port = port or self.settings.kafka_port
        self.controller_port = self.port + 1
        self.properties = properties or {}
        self.client = client or {}
        self.node_id = node_id
        self.voters = voters or f"{node_id}@{_HOST}:{self.controller_port}"
        self.cluster_id = cluster_id
        self.state_dir = state_dir or self.settings.var_dir / "kafka" / str(self.port)
        self.pid_file = self.state_dir / "broker.pid"
        self.log_file = self.state_dir / "broker.log"

    @property
    def bootstrap(self) -> str:
        return f"{_HOST}:{self.port}"

    @property
    def libs_dir(self) -> Path:
        digest = hashlib.sha256((BROKER_FILES / "pom.xml").read_bytes()).hexdigest()[:12]
        return self.settings.cache_dir / "kafka" / digest / "libs"

    def fetch(self) -> Path:
        """Resolve the broker's jars into the cache (Maven, once) and return their folder."""
        libs = self.libs_dir
        if (libs / ".complete").exists():
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise ToolMissing(
                "Maven (mvn) is needed once to fetch the Kafka broker jars from Maven Central, "
                "and it is not on PATH. On Debian: apt-get install maven"
            )
        staging = libs.with_name("libs.partial")
        shutil.rmtree(staging, ignore_errors=True)
        with as_file(BROKER_FILES / "pom.xml") as pom:
            command = [
                mvn, "-B", "-q", "-f", str(pom),
                "dependency:copy-dependencies", "-DincludeScope=runtime",
                f"-DoutputDirectory={staging}",
            ]  # fmt: skip
            result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise InfrastructureError(
                "Maven could not fetch the Kafka jars:\n" + (result.stdout + result.stderr)[-3000:]
            )
        (staging / ".complete").write_text("")
        shutil.rmtree(libs, ignore_errors=True)
        staging.rename(libs)
        return libs

    def status(self) -> KafkaStatus:
        """Whether a broker answers on the port, and whether this merlin started it."""
        pid = processes.read_pid(self.pid_file)
        managed = pid is not None and processes.is_running(pid, _MARKER)
        running = (
            answers_metadata(self.bootstrap, 3.0, self.client)
            if (managed or processes.port_open(_HOST, self.port))
            else False
        )
        return KafkaStatus(running, self.bootstrap, pid if managed else None, managed)

    def start(self) -> KafkaStatus:
        """Start the broker unless one already answers; return once it serves metadata."""
        pid = self.launch()
        return self.status() if pid is None else self.wait_ready(pid)

    def launch(self) -> int | None:
        """Start the broker's process without waiting for it; None when it already answers."""
        if self.status().running:
            return None
        pid = processes.read_pid(self.pid_file)
        if pid is not None and processes.is_running(pid, _MARKER):
            return pid  # started earlier but not answering yet: wait for it rather than start twice
        if processes.port_open(_HOST, self.port):
            raise InfrastructureError(
                f"port {self.port} is taken by something that is not a Kafka broker of this merlin; "
                "stop it, or set MERLIN_LOCAL_KAFKA_PORT to another port"
            )
        java = _java()
        libs = self.fetch()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        properties = self._write_properties()
        # Copied beside server.properties: the broker outlives this process, and with it the
        # temporary file that as_file makes of a resource merlin does not have on disk.
        logging_config = self.state_dir / "log4j2.yaml"
        logging_config.write_bytes((BROKER_FILES / "log4j2.yaml").read_bytes())
        jvm = [
            java, f"-Xms{self.settings.kafka_heap}", f"-Xmx{self.settings.kafka_heap}",
            "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={logging_config}",
            "-cp", f"{libs}/*",
        ]  # fmt: skip
        if not (self.state_dir / "data" / "meta.properties").exists():
            cluster_id = self.cluster_id or _cluster_id(uuid.uuid4().bytes)
            formatted = subprocess.run(
                # One argument with its option: an id may start with "-" (one in 64 does).
                [*jvm, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}",
                 "-c", str(properties)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if formatted.returncode != 0:
                raise InfrastructureError(
                    "formatting Kafka storage failed:\n" + (formatted.stdout + formatted.stderr)[-3000:]
                )
        with self.log_file.open("a") as log:
            log.write(f"\n--- merlin kafka start {time.strftime('%Y-%m-%dT%H:%M:%S')} ---\n")
        pid = processes.spawn_detached(
            [*jvm, _MARKER, str(properties)], self.log_file, self.state_dir, dict(os.environ)
        )
        self.pid_file.write_text(str(pid))
        return pid

    def kill(self) -> bool:
        """SIGKILL the broker this merlin started (a crash, for fault tests); False when none ran."""
        pid = processes.read_pid(self.pid_file)
        if pid is None or not processes.is_running(pid, _MARKER):
            return False
        os.kill(pid, signal.SIGKILL)
        processes.reap(pid)
        self.pid_file.unlink(missing_ok=True)
        return True

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the broker this merlin started; False when none was running."""
        pid = self.running_pid()
        if pid is not None:
            processes.terminate(pid, _MARKER, timeout)
        self.pid_file.unlink(missing_ok=True)
        return pid is not None

    def running_pid(self) -> int | None:
        """The pid of the broker this checkout started, while it runs."""
        pid = processes.read_pid(self.pid_file)
        return pid if pid is not None and processes.is_running(pid, _MARKER) else None

    def wait_ready(self, pid: int) -> KafkaStatus:
        """Wait until the broker of ``pid`` answers metadata requests (or fail, with its log)."""
        deadline = time.monotonic() + self.settings.kafka_start_timeout
        while time.monotonic() < deadline:
            if not processes.is_running(pid, _MARKER):
                processes.reap(pid)
                raise InfrastructureError(
                    f"the Kafka broker exited while starting; the end of {self.log_file}:\n"
                    + processes.tail(self.log_file)
                )
            if processes.port_open(_HOST, self.port) and answers_metadata(self.bootstrap, 2.0, self.client):
                return KafkaStatus(True, self.bootstrap, pid, True)
            time.sleep(0.2)
        raise InfrastructureError(
            f"the Kafka broker did not answer within {self.settings.kafka_start_timeout:.0f} s; "
            f"see {self.log_file}"
        )

    def _write_properties(self) -> Path:
        properties = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "listeners": f"PLAINTEXT://{_HOST}:{self.port},CONTROLLER://{_HOST}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{_HOST}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "controller.quorum.voters": self.voters,
            "log.dirs": str(self.state_dir / "data"),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Lets tests give consumers short sessions, so a killed member leaves the group fast
            # (classic protocol; the consumer group protocol's bounds on the group configs).
            "group.min.session.timeout.ms": "1000",
            "group.consumer.min.session.timeout.ms": "1000",
            "group.consumer.min.heartbeat.interval.ms": "100",
            "auto.create.topics.enable": "false",
            "delete.topic.enable": "true",
            **self.properties,
        }
        path = self.state_dir / "server.properties"
        path.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))
        return path


class LocalKafkaCluster:
    """``brokers`` KRaft nodes on this machine, each a broker and a voter of one controller quorum.

    Node ``i`` (from 0) listens on ``port + 2i`` and its controller on the port after; their
    state lives apart from the single broker's, under ``var/kafka/cluster-<brokers>/``.
    """

    def __init__(
        self, brokers: int = 3, settings: LocalSettings | None = None, port: int | None = None
    ) -> None:
        if brokers < 1:
            raise InfrastructureError("a cluster needs at least one broker")
        self.settings = settings or LocalSettings()
        base = port or self.settings.kafka_port
        ports = [base + 2 * i for i in range(brokers)]
        self.home = self.settings.var_dir / "kafka" / f"cluster-{brokers}"
        voters = ",".join(f"{i + 1}@{_HOST}:{p + 1}" for i, p in enumerate(ports))
        self.replicas = replicas = min(3, brokers)
        # Kafka's own topics as replicated as the cluster allows, so losing a broker loses no group.
        properties = {
            "offsets.topic.replication.factor": str(replicas),
            "transaction.state.log.replication.factor": str(replicas),
            "transaction.state.log.min.isr": str(min(2, replicas)),
            "share.coordinator.state.topic.replication.factor": str(replicas),
            "share.coordinator.state.topic.min.isr": str(min(2, replicas)),
        }
        # One id for every node, the same on every start (each node keeps it once formatted).
        cluster_id = _cluster_id(uuid.uuid5(uuid.NAMESPACE_URL, f"merlin-kafka:{voters}").bytes)
        self.nodes = [
            LocalKafka(
                self.settings,
                p,
                properties,
                node_id=i + 1,
                voters=voters,
                cluster_id=cluster_id,
                state_dir=self.home / str(p),
            )
            for i, p in enumerate(ports)
        ]

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    def replicated(self, base: KafkaSettings, prefix: str, partitions: int = 3) -> KafkaSettings:
        """``base`` with topics of their own on this cluster, replicated three ways, two in sync."""
        return base.namespaced(
            prefix,
            bootstrap_servers=self.bootstrap,
            partitions=partitions,
            replication_factor=self.replicas,
            min_insync_replicas=min(2, self.replicas),
        )

    def leader(self, kafka: KafkaSettings, partition: int) -> LocalKafka:
        """The node leading ``partition`` of ``kafka``'s events topic (blocking: a metadata request)."""
        metadata = AdminClient(kafka.client()).list_topics(kafka.events_topic, timeout=10)
        leader = metadata.topics[kafka.events_topic].partitions[partition].leader
        return next(node for node in self.nodes if node.node_id == leader)

    def reset(self) -> None:
        """Kill every node this merlin started and remove the cluster's state.

        Killed, not stopped: the state goes anyway, and a controlled shutdown of the last nodes
        of a quorum waits for the others (half a minute for three).
        """
        for node in self.nodes:
            node.kill()
        shutil.rmtree(self.home, ignore_errors=True)

    def start(self) -> list[KafkaStatus]:
        """Start every node that is not running, then wait until each answers."""
        launched = [(node, node.launch()) for node in self.nodes]  # all first: none answers without a quorum
        return [node.status() if pid is None else node.wait_ready(pid) for node, pid in launched]

    def stop(self, timeout: float = 30.0) -> list[bool]:
        """Stop every node this merlin started, all at once.

        One at a time, the last nodes would each wait out ``timeout`` for a quorum that their
        stopped peers can no longer form (5 s for two nodes at once, against 35 s).
        """
        pids = [node.running_pid() for node in self.nodes]
        processes.terminate_all([pid for pid in pids if pid is not None], _MARKER, timeout)
        for node in self.nodes:
            node.pid_file.unlink(missing_ok=True)
        return [pid is not None for pid in pids]

    def status(self) -> list[KafkaStatus]:
        return [node.status() for node in self.nodes]

    def started(self) -> bool:
        """Whether any node of this cluster is a process this checkout started and still runs."""
        return any(node.running_pid() is not None for node in self.nodes)

    @classmethod
    def found(cls, settings: LocalSettings | None = None) -> list[LocalKafkaCluster]:
        """The clusters whose state is under var/kafka/ and of which some node still runs.

        ``start --brokers N`` leaves its nodes' state in ``cluster-N/<port>/``, so a later ``stop``
        or ``status`` finds them without being told N or the base port again.
        """
        settings = settings or LocalSettings()
        clusters = []
        for home in sorted((settings.var_dir / "kafka").glob("cluster-*")):
            brokers = home.name.removeprefix("cluster-")
            if not brokers.isdigit() or int(brokers) < 1:
                continue
            ports = sorted(int(path.name) for path in home.iterdir() if path.name.isdigit())
            for base in _bases(ports, int(brokers)):
                cluster = cls(int(brokers), settings, base)
                if cluster.started():
                    clusters.append(cluster)
        return clusters


def _bases(ports: list[int], brokers: int) -> list[int]:
    """The first ports of the clusters laid out in ``ports`` (node i of one on its base + 2i)."""
    bases: list[int] = []
    covered: set[int] = set()
    for port in ports:
        if port not in covered:
            bases.append(port)
            covered.update(port + 2 * i for i in range(brokers))
    return bases


def _cluster_id(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw[:16]).rstrip(b"=").decode()


def answers_metadata(bootstrap: str, timeout: float, client: ClientConfig | None = None) -> bool:
    """True when a broker at ``bootstrap`` answers a metadata request within ``timeout`` s."""
    quiet = logging.getLogger("merlin.local.kafka.probe")
    quiet.setLevel(logging.CRITICAL)
    # librdkafka takes a Python logger here; the stubs only know scalar values.
    admin = AdminClient({**(client or {}), "bootstrap.servers": bootstrap, "logger": quiet})  # type: ignore[dict-item]
    try:
        return bool(admin.list_topics(timeout=timeout).brokers)
    except KafkaException:
        return False


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise ToolMissing(
            f"Java {_MIN_JAVA}+ is needed to run the local Kafka broker, and `java` is not on PATH. "
            "On Debian: apt-get install openjdk-17-jre-headless"
        )
    probe = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    found = re.search(r'version "(\d+)', probe.stderr + probe.stdout)
    if found is None or int(found.group(1)) < _MIN_JAVA:
        raise ToolMissing(
            f"Java {_MIN_JAVA}+ is needed to run the local Kafka broker; {java} is "
            f"{found.group(1) if found else 'of unknown version'}"
        )
    return java
