"""The Docker deployment cannot run here (no engine), so check that it fits the code it ships."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from admin_api.settings import AdminApiSettings
from forwarder.settings import ForwarderSettings
from kernel.auth import AuthSettings
from kernel.settings import KafkaSettings
from merlin.cli import build_parser
from merlin.kafka_access import AccessSettings
from merlin.local.settings import LocalSettings
from read_api.settings import ReadApiSettings
from read_store.settings import ReadStoreSettings
from tests import PROJECT_ROOT
from tests.compose import DOCKER, example_env, render, rendered
from tests.observability import SCRAPE_CONFIG
from webhooks.settings import EndpointsSettings
from write_api.settings import WriteApiSettings

SETTINGS = (
    KafkaSettings,
    AccessSettings,
    AdminApiSettings,
    AuthSettings,
    LocalSettings,
    ReadStoreSettings,
    ReadApiSettings,
    WriteApiSettings,
    ForwarderSettings,
    EndpointsSettings,
)


def known_variables() -> set[str]:
    names: set[str] = set()
    for settings in SETTINGS:
        prefix = settings.model_config.get("env_prefix", "")
        names.update(f"{prefix}{field}".upper() for field in settings.model_fields)
    return names


def merlin_services() -> dict[str, dict[str, object]]:
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    return {name: spec for name, spec in compose["services"].items() if "build" in spec}


def test_compose_runs_the_four_services_and_its_set_up_steps() -> None:
    commands: set[tuple[str, ...]] = {tuple(spec["command"]) for spec in merlin_services().values()}  # type: ignore[arg-type]
    assert commands == {
        ("write-api",),
        ("read-api",),
        ("forwarder",),
        ("admin-api",),
        ("db", "upgrade"),
        ("topics", "create"),
        ("acls", "apply"),
    }


@pytest.mark.parametrize("name", sorted(merlin_services()))
def test_each_service_command_is_one_merlin_understands(name: str) -> None:
    command = merlin_services()[name]["command"]
    assert isinstance(command, list)
    build_parser().parse_args(command)  # exits (fails the test) on an unknown command


def test_every_merlin_variable_in_the_deployment_is_a_setting() -> None:
    files = [DOCKER / "compose.yaml", DOCKER / "Dockerfile"]
    used = {name for path in files for name in re.findall(r"\bMERLIN_[A-Z_]+\b", path.read_text())}
    assert used, "the deployment configures merlin"
    assert used <= known_variables(), used - known_variables()


def test_the_image_copies_every_package() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\S+) ", dockerfile, flags=re.MULTILINE))
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    shipped = {name.rstrip("*") for name in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert shipped == {path.parent.name for path in Path(PROJECT_ROOT).glob("*/__init__.py")} - {
        "tests",
        "bench",
    }
    assert shipped <= copied


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The compose file as docker-compose renders it with the example's secrets."""
    return rendered(example_env(), tmp_path_factory.mktemp("compose"))


def test_docker_compose_accepts_the_deployment_and_names_every_missing_secret(tmp_path: Path) -> None:
    secrets = example_env()
    assert render(secrets, tmp_path).returncode == 0
    for name in secrets:
        refused = render({k: v for k, v in secrets.items() if k != name}, tmp_path)
        assert refused.returncode != 0, f"the deployment starts without {name}"
        assert f"set {name} in docker/.env" in refused.stderr


def test_only_the_apis_are_published_and_the_admin_api_and_observability_only_on_loopback(
    deployment: dict[str, Any],
) -> None:
    published = {
        name: sorted(_published(port) for port in spec["ports"])
        for name, spec in deployment["services"].items()
        if spec.get("ports")
    }
    assert published == {
        "write-api": [("", 8081)],
        "read-api": [("", 8082)],
        "admin-api": [("127.0.0.1", 8083)],
        "prometheus": [("127.0.0.1", 9090)],
        "grafana": [("127.0.0.1", 3000)],
        "jaeger": [("127.0.0.1", 4317), ("127.0.0.1", 4318), ("127.0.0.1", 16686)],
    }


def _published(port: str | dict[str, Any]) -> tuple[str, int]:
    """(host address, host port) of a rendered port, long form or ``host:published:target/tcp``."""
    if isinstance(port, dict):
        return str(port.get("host_ip", "")), int(port["published"])
    host, published, _target = port.rsplit(":", 2) if port.count(":") == 2 else ("", *port.split(":"))
    return host, int(published)


def test_kafka_and_postgres_are_only_on_the_internal_network(deployment: dict[str, Any]) -> None:
    assert deployment["networks"]["backend"].get("internal") is True
    services = deployment["services"]
    for name in ("kafka-1", "kafka-2", "kafka-3", "postgres"):
        assert set(services[name]["networks"]) == {"backend"}, name
    reaching_out = {name for name, spec in services.items() if "edge" in spec["networks"]}
    assert reaching_out == {"write-api", "read-api", "admin-api", "forwarder"}


def test_no_password_is_written_in_the_deployment_itself(deployment: dict[str, Any]) -> None:
    text = (DOCKER / "compose.yaml").read_text()
    assert "merlin:merlin@" not in text
    secrets = set(example_env().values())
    for name, spec in deployment["services"].items():
        for variable, value in spec.get("environment", {}).items():
            if re.search(r"PASSWORD|SECRET|TOKEN", variable):
                assert str(value) in secrets, f"{name}: {variable} is not from docker/.env"


def test_the_env_file_with_the_real_secrets_is_never_committed() -> None:
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(DOCKER / ".env")], cwd=DOCKER, check=False
    )  # fmt: skip
    assert ignored.returncode == 0


def test_every_kafka_client_authenticates_as_the_user_acls_apply_creates(deployment: dict[str, Any]) -> None:
    users = AccessSettings().users()
    expected = {
        "write-api": users["write_api"],
        "read-api": users["read_api"],
        "admin-api": users["admin_api"],
        "forwarder": users["forwarder"],
        "acls": "admin",
        "topics": "admin",
    }
    for name in set(merlin_services()) - {"migrate"}:
        environment = deployment["services"][name]["environment"]
        assert environment["MERLIN_KAFKA_SECURITY_PROTOCOL"].startswith("SASL_"), name
        assert environment["MERLIN_KAFKA_SASL_USERNAME"] == expected[name], name
    broker = deployment["services"]["kafka-1"]["environment"]
    assert broker["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    assert "PLAINTEXT:PLAINTEXT" not in broker["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"]


OBSERVABILITY = {"prometheus", "grafana", "jaeger"}


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The deployment rendered with the ``observability`` profile on."""
    return rendered(example_env(), tmp_path_factory.mktemp("compose"), ("observability",))


def test_the_observability_profile_adds_prometheus_grafana_and_jaeger_alone(observed: dict[str, Any]) -> None:
    services = observed["services"]
    profiled = {name for name, spec in services.items() if spec.get("profiles")}
    assert profiled == OBSERVABILITY
    assert all(services[name]["profiles"] == ["observability"] for name in OBSERVABILITY)
    for name in OBSERVABILITY:
        image = services[name]["image"]
        repository, _, tag = image.rpartition(":")
        assert repository, f"{name}: {image} has no tag"
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: {image} is not pinned to a release"


def _mounts(spec: dict[str, Any]) -> dict[str, str]:
    """A rendered service's bind mounts: target in the container → source on the host."""
    mounts = {}
    for volume in spec.get("volumes", []):
        source, target, *_mode = volume.split(":") if isinstance(volume, str) else (
            volume["source"], volume["target"]
        )  # fmt: skip
        if source.startswith("/"):
            mounts[target] = source
    return mounts


def test_every_file_the_deployment_mounts_exists_in_the_repository(observed: dict[str, Any]) -> None:
    mounted = {name: _mounts(spec) for name, spec in observed["services"].items()}
    sources = [Path(source) for mounts in mounted.values() for source in mounts.values()]
    assert sources, "the profile mounts its configuration"
    for source in sources:
        assert source.exists(), source
        assert source.resolve().is_relative_to(DOCKER / "observability"), source
    prometheus = mounted["prometheus"]
    assert Path(prometheus["/etc/prometheus/prometheus.yml"]) == SCRAPE_CONFIG
    scrape = yaml.safe_load(SCRAPE_CONFIG.read_text())
    for rules in scrape["rule_files"]:  # relative to the config file, in the container as here
        assert Path(prometheus[f"/etc/prometheus/{rules}"]) == SCRAPE_CONFIG.parent / rules
    command = observed["services"]["prometheus"]["command"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in command


def test_grafana_provisions_the_profiles_prometheus_and_the_dashboard_it_mounts(
    observed: dict[str, Any],
) -> None:
    mounts = _mounts(observed["services"]["grafana"])
    provisioning = Path(mounts["/etc/grafana/provisioning"])
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())["datasources"]
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "merlin.yaml").read_text())["providers"]
    folder = provider["options"]["path"]
    dashboards = {target: source for target, source in mounts.items() if Path(target).parent == Path(folder)}
    assert [Path(source).name for source in dashboards.values()] == ["merlin.json"]


def test_prometheus_scrapes_each_service_on_a_network_it_shares_with_it(observed: dict[str, Any]) -> None:
    services = observed["services"]
    scrape = yaml.safe_load(SCRAPE_CONFIG.read_text())
    networks = set(services["prometheus"]["networks"])
    ports = {
        "write-api": WriteApiSettings.model_fields["metrics_port"].default,
        "read-api": ReadApiSettings.model_fields["metrics_port"].default,
        "admin-api": AdminApiSettings.model_fields["metrics_port"].default,
        "forwarder": ForwarderSettings.model_fields["metrics_port"].default,
    }
    scraped = {}
    for job in scrape["scrape_configs"]:
        for discovery in job["dns_sd_configs"]:
            for name in discovery["names"]:
                assert name in services, f"{job['job_name']}: no service {name}"
                assert networks & set(services[name]["networks"]), name
                scraped[name] = discovery["port"]
    assert scraped == ports
    # Each metrics listener answers beyond its own container (the default is loopback).
    assert "MERLIN_FORWARDER_METRICS_HOST=0.0.0.0" in (DOCKER / "Dockerfile").read_text()
    for name, prefix in (("write-api", "WRITE_API"), ("read-api", "READ_API"), ("admin-api", "ADMIN_API")):
        assert services[name]["environment"][f"MERLIN_{prefix}_METRICS_HOST"] == "0.0.0.0", name


def test_merlin_services_send_traces_to_jaeger_over_otlp_when_told_to(tmp_path: Path) -> None:
    told = {**example_env(), "OTEL_TRACES_EXPORTER": "otlp"}
    for env, exporter in ((example_env(), "none"), (told, "otlp")):
        services = rendered(env, tmp_path, ("observability",))["services"]
        jaeger_networks = set(services["jaeger"]["networks"])
        assert {"4317", "4318"} <= {str(port) for port in services["jaeger"]["expose"]}
        for name in merlin_services():
            environment = services[name]["environment"]
            assert environment["OTEL_TRACES_EXPORTER"] == exporter, name
            assert environment["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318", name
            assert jaeger_networks & set(services[name]["networks"]), name
