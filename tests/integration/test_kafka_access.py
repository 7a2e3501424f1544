"""The deployment's Kafka security on a real broker: SASL as compose sets it, ACLs by `merlin acls apply`.

A broker of its own is started with the security properties the compose file gives its
brokers (only hosts, ports and replication are local), so what is tested is what ships.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

from kernel.settings import ClientConfig, KafkaSettings
from merlin.kafka_access import AccessSettings
from merlin.local import LocalKafka
from merlin.local.service_processes import Services, eventually
from tests.compose import broker_properties, example_env, rendered
from tests.downstream import Downstream
from tests.integration.hooks import all_delivered, endpoints_file, newest_is_readable, write_messages
from tests.integration.test_live_rooms import create, stream

USERS = AccessSettings().users()


class SecuredBroker:
    def __init__(self, bootstrap: str, admin_password: str) -> None:
        self.bootstrap = bootstrap
        self.admin_password = admin_password
        self.passwords = {service: uuid.uuid4().hex for service in USERS}

    def admin(self) -> dict[str, str]:
        """The variables of a set-up job: the super user, over PLAIN."""
        return {
            "MERLIN_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "MERLIN_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "MERLIN_KAFKA_SASL_MECHANISM": "PLAIN",
            "MERLIN_KAFKA_SASL_USERNAME": "admin",
            "MERLIN_KAFKA_SASL_PASSWORD": self.admin_password,
        }

    def service(self, service: str) -> dict[str, str]:
        """The variables that make a service its own SCRAM user."""
        return {
            "MERLIN_KAFKA_SASL_USERNAME": USERS[service],
            "MERLIN_KAFKA_SASL_PASSWORD": self.passwords[service],
        }

    def client(self, service: str, password: str | None = None, **more: str | bool) -> ClientConfig:
        return {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "SCRAM-SHA-512",
            "sasl.username": USERS[service],
            "sasl.password": password or self.passwords[service],
            **more,
        }


@pytest.fixture(scope="module")
def secured_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredBroker]:
    """A broker configured as the compose file's brokers are, with a fresh admin password."""
    admin_password = uuid.uuid4().hex
    env = {**example_env(), "KAFKA_ADMIN_PASSWORD": admin_password}
    compose = rendered(env, tmp_path_factory.mktemp("compose"))
    properties = broker_properties(compose["services"]["kafka-1"]["environment"])
    # The container's volume; this broker keeps its log in its own state folder.
    assert properties.pop("log.dirs"), "the compose file names the brokers' log dir"
    # Below the ephemeral range, so no client's socket holds it (or the controller's, port + 1).
    port = int(os.environ.get("TEST_SECURED_KAFKA_PORT", "19192"))
    local = {
        "node.id": "1",
        "listeners": f"BROKER://127.0.0.1:{port},CONTROLLER://127.0.0.1:{port + 1}",
        "advertised.listeners": f"BROKER://127.0.0.1:{port}",
        "controller.quorum.voters": f"1@127.0.0.1:{port + 1}",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "min.insync.replicas": "1",
    }
    assert set(local) - {"node.id"} <= set(properties), "the compose file no longer sets these"
    admin_client: ClientConfig = {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
        "sasl.username": "admin",
        "sasl.password": admin_password,
    }
    broker = LocalKafka(port=port, properties={**properties, **local}, client=admin_client)
    shutil.rmtree(broker.state_dir, ignore_errors=True)
    broker.start()
    try:
        yield SecuredBroker(broker.bootstrap, admin_password)
    finally:
        broker.stop()
        shutil.rmtree(broker.state_dir, ignore_errors=True)


def merlin(command: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "merlin.cli", *command],
        capture_output=True, text=True, check=False, timeout=120, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def secured_services(secured_broker: SecuredBroker, tmp_path: Path) -> Iterator[Services]:
    """Topics and ACLs set up by the set-up jobs' commands; services that each log in as their own user."""
    prefix = f"secure-{uuid.uuid4().hex[:8]}"
    kafka = KafkaSettings().namespaced(prefix, bootstrap_servers=secured_broker.bootstrap, partitions=3)
    services = Services(kafka, f"sqlite:///{tmp_path / 'read.db'}", tmp_path)
    services.settings.update(
        {"MERLIN_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "MERLIN_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512"}
    )
    setup = {
        **services.env(),
        **secured_broker.admin(),
        **{f"MERLIN_ACCESS_{s.upper()}_PASSWORD": p for s, p in secured_broker.passwords.items()},
    }
    merlin(["topics", "create"], setup)
    merlin(["db", "upgrade"], setup)
    applied = merlin(["acls", "apply"], setup)
    assert f"allow {USERS['write_api']}: WRITE on topic {kafka.events_topic}" in applied
    assert secured_broker.admin_password not in applied
    yield services
    services.stop_all()
    secrets = [secured_broker.admin_password, *secured_broker.passwords.values()]
    for service in services.running:
        assert not [s for s in secrets if s in service.output()], f"{service.name} logged a Kafka password"


async def test_each_service_does_its_work_as_its_own_user(
    secured_broker: SecuredBroker,
    secured_services: Services,
    downstream: tuple[Downstream, str],
    tmp_path: Path,
) -> None:
    _, url = downstream
    hooks = endpoints_file(tmp_path, url)
    write = await secured_services.write_api(**secured_broker.service("write_api"))
    read = await secured_services.read_api(**secured_broker.service("read_api"))
    forwarder = secured_services.forwarder(**hooks, **secured_broker.service("forwarder"))
    admin = await secured_services.admin_api(**hooks, **secured_broker.service("admin_api"))

    sent = await write_messages(write, ["r1", "r2"], 3)
    await all_delivered(url, sent)
    async with httpx.AsyncClient(timeout=30, headers=write.headers) as client:
        await newest_is_readable(client, write, read, "r1", 3)
        # The live feed reads the events topic under the read API's user, in no group (decision 0025).
        async with stream(client, f"{read.url}/v1/rooms/r1/live", write.headers) as live:
            created = await create(client, write, "r1", "live", write.headers)
            (got,) = await live.take(1)
            assert got.data["event_id"] == created["event_id"]
        headers = {"Authorization": f"Bearer {secured_services.admin_token}"}
        status = await client.get(f"{admin.url}/v1/admin/endpoints/hook/status", headers=headers)
        assert status.status_code == 200, status.text

        async def reporting() -> bool | None:
            # The forwarder's reports reach the settings topic under its own user.
            answer = await client.get(f"{admin.url}/v1/admin/endpoints/hook/status", headers=headers)
            return bool(answer.json()["rates"]["instances"]) or None

        await eventually(reporting, 30, "the forwarder reporting its rates")
        paused = await client.post(f"{admin.url}/v1/admin/endpoints/hook/pause", headers=headers)
        assert paused.status_code == 200, paused.text
    # Its groups' session and heartbeat are its own (consumer group protocol): set, not refused.
    assert "group_configs_refused" not in forwarder.output()


def _produce_error(config: ClientConfig, topic: str) -> KafkaError | None:
    producer = Producer(config)
    outcome: list[KafkaError | None] = []
    producer.produce(topic, b"x", on_delivery=lambda error, _message: outcome.append(error))
    producer.flush(20)
    assert outcome, "no delivery report within 20 s"
    return outcome[0]


def _consume_error(config: ClientConfig, topic: str, group: str) -> KafkaError | None:
    consumer = Consumer({**config, "group.id": group, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    try:
        for _ in range(50):
            message = consumer.poll(0.2)
            error = None if message is None else message.error()
            if error is not None and error.code() != KafkaError._PARTITION_EOF:
                return error
            if consumer.assignment():
                return None
        raise AssertionError("neither an assignment nor an error within 10 s")
    except KafkaException as exc:
        return exc.args[0]  # type: ignore[no-any-return]
    finally:
        consumer.close()


DENIED = (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED)


def assert_refused(error: KafkaError | None, why: tuple[int, ...] = DENIED, who: str = "") -> None:
    assert error is not None, f"{who} was let through"
    assert error.code() in why, (who, error)


def test_only_the_write_api_writes_events_and_only_the_forwarder_reads_them(
    secured_broker: SecuredBroker, secured_services: Services
) -> None:
    kafka = secured_services.kafka
    group = secured_services.env()["MERLIN_FORWARDER_GROUP_ID"]
    assert _produce_error(secured_broker.client("write_api"), kafka.events_topic) is None
    for service in ("read_api", "forwarder", "admin_api"):
        error = _produce_error(secured_broker.client(service), kafka.events_topic)
        assert_refused(error, who=service)
    error = _produce_error(secured_broker.client("write_api"), kafka.dead_letter_topic)
    assert_refused(error)

    assert _consume_error(secured_broker.client("forwarder"), kafka.events_topic, group) is None
    for service in ("write_api", "read_api"):
        error = _consume_error(secured_broker.client(service), kafka.events_topic, group)
        assert_refused(error, who=service)
    # Even the forwarder only in its own groups.
    error = _consume_error(secured_broker.client("forwarder"), kafka.events_topic, "someone-else")
    assert_refused(error)


def test_a_wrong_password_or_no_credentials_are_refused(
    secured_broker: SecuredBroker, secured_services: Services
) -> None:
    topic = secured_services.kafka.events_topic
    wrong = secured_broker.client("write_api", password="not-the-password")
    error = _produce_error({**wrong, "message.timeout.ms": 5000}, topic)
    assert_refused(
        error, (KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._MSG_TIMED_OUT)
    )
    plain: ClientConfig = {"bootstrap.servers": secured_broker.bootstrap, "message.timeout.ms": 5000}
    assert_refused(_produce_error(plain, topic), (KafkaError._MSG_TIMED_OUT, KafkaError._TRANSPORT))
