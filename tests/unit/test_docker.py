"""The Docker deployment cannot run here (no engine), so check that it fits the code it ships."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from admin_api.settings import AdminApiSettings
from forwarder.settings import ForwarderSettings
from kernel.settings import KafkaSettings
from merlin.cli import build_parser
from merlin.kafka_access import AccessSettings
from merlin.settings_registry import known_names
from read_api.settings import ReadApiSettings
from read_store.settings import ReadStoreSettings
from tests import PROJECT_ROOT
from tests.compose import DOCKER, broker_properties, build_context, example_env, filled_env, render, rendered
from tests.observability import SCRAPE_CONFIG
from write_api.settings import WriteApiSettings


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
    assert used <= known_names(), used - known_names()


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


def test_every_variable_the_deployment_requires_is_in_the_example() -> None:
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", (DOCKER / "compose.yaml").read_text()))
    assert "MERLIN_ADMIN_TOKEN" in required
    assert required - set(example_env()) == set()


def _clear_merlin_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("MERLIN_", "OTEL_")):
            monkeypatch.delenv(name)


def _write_api() -> object:
    from write_api.app import create_app

    return create_app()


def _read_api() -> object:
    from read_api.app import create_app

    return create_app()


def _admin_api() -> object:
    from admin_api.app import create_app

    return create_app()


def _forwarder() -> object:
    from forwarder.worker import Forwarder

    return Forwarder(ForwarderSettings(), KafkaSettings(), ReadStoreSettings())


# What each command builds from its settings before it touches the network: what refuses a setting
# that is missing or malformed, as the service would at start.
STARTS: dict[str, Callable[[], object]] = {
    "write-api": _write_api,
    "read-api": _read_api,
    "admin-api": _admin_api,
    "forwarder": _forwarder,
    "acls": lambda: (KafkaSettings(), AccessSettings().passwords()),
    "topics": KafkaSettings,
    "migrate": ReadStoreSettings,
}


def test_every_merlin_service_is_built_below() -> None:
    assert set(STARTS) == set(merlin_services())


@pytest.mark.parametrize("name", sorted(STARTS))
def test_each_service_builds_from_the_environment_the_deployment_gives_it(
    name: str, filled: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    _clear_merlin_environment(monkeypatch)
    for variable, value in filled["services"][name]["environment"].items():
        monkeypatch.setenv(variable, str(value))
    STARTS[name]()  # raises, as the service would exit, on a missing or refused setting


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The deployment rendered with docker/.env filled in as its example says."""
    return rendered(filled_env(), tmp_path_factory.mktemp("compose"))


def test_the_admin_api_refuses_to_start_without_its_token(
    filled: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from domain.errors import MerlinError

    _clear_merlin_environment(monkeypatch)
    for variable, value in filled["services"]["admin-api"]["environment"].items():
        if variable != "MERLIN_ADMIN_TOKEN":
            monkeypatch.setenv(variable, str(value))
    with pytest.raises(MerlinError, match="MERLIN_ADMIN_TOKEN"):
        STARTS["admin-api"]()


def _named_volumes(spec: dict[str, Any]) -> dict[str, str]:
    """A rendered service's named volumes: target in the container → volume."""
    named = {}
    for volume in spec.get("volumes", []):
        source, target, *_mode = volume.split(":") if isinstance(volume, str) else (
            volume["source"], volume["target"]
        )  # fmt: skip
        if not source.startswith(("/", ".")):
            named[target] = source
    return named


def test_every_brokers_log_is_a_volume_of_its_own(deployment: dict[str, Any]) -> None:
    brokers = {
        name: spec
        for name, spec in deployment["services"].items()
        if spec.get("image", "").startswith("apache/kafka:")
    }
    assert len(brokers) == 3
    declared = set(deployment["volumes"])
    kept: list[str] = []
    for name, spec in brokers.items():
        properties = broker_properties(spec["environment"])
        log_dirs = properties.get("log.dirs")
        assert log_dirs, f"{name}: no log.dirs, so the image's /tmp/kraft-combined-logs"
        # KRaft's metadata log is in the first log dir unless it is given one of its own.
        metadata = [properties["metadata.log.dir"]] if "metadata.log.dir" in properties else []
        volumes = _named_volumes(spec)
        for log_dir in log_dirs.split(",") + metadata:
            assert log_dir in volumes, f"{name}: {log_dir} is in the container only"
            assert volumes[log_dir] in declared, name
            kept.append(volumes[log_dir])
    assert len(set(kept)) == len(kept) >= 3, "brokers sharing a volume"


# Where the official images keep the cluster, by major version (the 18 images moved it).
PGDATA = {"17": "/var/lib/postgresql/data"}


def test_postgresqls_data_is_a_volume(deployment: dict[str, Any]) -> None:
    spec = deployment["services"]["postgres"]
    major = _tag(spec["image"]).split(".")[0]
    assert major in PGDATA, f"PostgreSQL {major}: where does its image keep the data? (PGDATA above)"
    data = spec.get("environment", {}).get("PGDATA", PGDATA[major])
    assert _named_volumes(spec).get(data) in set(deployment["volumes"])


MERLIN_SERVICES = {"write-api", "read-api", "admin-api", "forwarder"}


def test_every_long_running_merlin_service_reports_its_readiness(deployment: dict[str, Any]) -> None:
    services = deployment["services"]
    for name in MERLIN_SERVICES:
        check = services[name].get("healthcheck")
        assert check, f"{name} has no health check"
        # The probe of this service; `merlin probe` is the same command.
        assert check["test"] == ["CMD", "python", "-m", "merlin.probe", name], name
        build_parser().parse_args(["probe", name])
        assert _seconds(check["timeout"]) < _seconds(check["interval"]), name
    # Nothing else of merlin's is checked: the set-up jobs run once and exit.
    checked = {name for name, spec in services.items() if "build" in spec and spec.get("healthcheck")}
    assert checked == MERLIN_SERVICES


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(number) * units[unit] for number, unit in re.findall(r"([\d.]+)(ms|s|m|h)", duration))


def test_the_image_reports_the_readiness_of_whatever_service_it_runs() -> None:
    dockerfile = (DOCKER / "Dockerfile").read_text()
    (check,) = re.findall(r"^HEALTHCHECK .*CMD (\[.*\])$", dockerfile, flags=re.MULTILINE)
    command = json.loads(check)
    assert command == ["python", "-m", "merlin.probe"]  # no service: the one process 1 runs


def _tag(image: str) -> str:
    return image.split("@", 1)[0].rpartition(":")[2]


# A release's exact number: x.y.z, or x.y for PostgreSQL (major.minor since 10); then a variant.
EXACT = {"postgres": r"\d+\.\d+", "": r"v?\d+\.\d+\.\d+"}


def _pinned(image: str) -> bool:
    name = image.split("@", 1)[0].rpartition(":")[0]
    version = EXACT.get(name, EXACT[""])
    return bool(name) and re.fullmatch(rf"{version}(-[a-z0-9.]+)*", _tag(image)) is not None


def test_every_image_is_pinned_to_a_release(observed: dict[str, Any]) -> None:
    images = [spec["image"] for spec in observed["services"].values() if "image" in spec]
    bases = re.findall(r"^FROM (\S+)", (DOCKER / "Dockerfile").read_text(), flags=re.MULTILINE)
    assert len(images) >= 7
    assert len(bases) == 2
    assert [image for image in images + bases if not _pinned(image)] == []
    # The image merlin is built on, by digest too: a rebuild gets the same files.
    assert all(re.search(r"@sha256:[0-9a-f]{64}$", base) for base in bases), bases


def test_the_pin_check_refuses_a_floating_tag() -> None:
    assert _pinned("python:3.11.16-slim-trixie@sha256:" + "0" * 64)
    assert _pinned("postgres:17.11-trixie")
    assert _pinned("prom/prometheus:v2.55.1")
    for floating in (
        "python:3.11-slim",
        "postgres:17",
        "apache/kafka:latest",
        "grafana/grafana",
        "redis:7.2",
    ):
        assert not _pinned(floating), floating


LOCK = DOCKER / "requirements.lock"


def _image_python() -> Version:
    """The Python of the image, from its base's tag."""
    (version,) = set(re.findall(r"^FROM python:(\d+\.\d+\.\d+)", (DOCKER / "Dockerfile").read_text(), re.M))
    return Version(version)


def _image_environment() -> dict[str, str]:
    """The markers' environment in the image: CPython on x86_64 Linux."""
    python = _image_python()
    return {
        **{marker: str(value) for marker, value in default_environment().items()},
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "os_name": "posix",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "python_version": f"{python.major}.{python.minor}",
        "python_full_version": str(python),
        "implementation_version": str(python),
    }


def _locked(text: str) -> list[tuple[Requirement, list[str]]]:
    """Each requirement of a lock file in pip's format, with its hashes."""
    entries = []
    for line in re.sub(r"\\\n", " ", text).splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        requirement, *options = line.split(" --")
        hashes = [option.strip().removeprefix("hash=") for option in options if option.startswith("hash=")]
        entries.append((Requirement(requirement.strip()), hashes))
    return entries


def _unsatisfied(dependencies: list[str], lock: str, environment: dict[str, str]) -> list[str]:
    """What of ``dependencies`` the lock does not pin at a version they allow."""
    pins = {}
    for requirement, _hashes in _locked(lock):
        (specifier,) = requirement.specifier
        pins[canonicalize_name(requirement.name)] = specifier.version
    missing = []
    wanted = list(dependencies)
    for text in wanted:
        dependency = Requirement(text)
        if dependency.marker is not None and not dependency.marker.evaluate(environment):
            continue
        # The image installs merlin with --no-deps: what an extra brings (uvicorn[standard]'s uvloop)
        # comes from the lock alone, so it is checked as a dependency of its own.
        wanted += _brought_by_extras(dependency, environment)
        pinned = pins.get(canonicalize_name(dependency.name))
        if pinned is None:
            missing.append(f"{dependency.name}: not in the lock")
        elif not dependency.specifier.contains(pinned, prereleases=True):
            missing.append(f"{dependency.name}: {pinned} is not {dependency.specifier}")
    return missing


def _brought_by_extras(dependency: Requirement, environment: dict[str, str]) -> list[str]:
    """The requirements ``dependency``'s extras add, as its installed metadata declares them."""
    if not dependency.extras:
        return []
    brought = []
    for text in importlib.metadata.requires(dependency.name) or []:
        requirement = Requirement(text)
        marker = requirement.marker
        if marker is not None and any(
            marker.evaluate({**environment, "extra": extra})
            and not marker.evaluate({**environment, "extra": ""})
            for extra in dependency.extras
        ):
            requirement.marker = None
            brought.append(str(requirement))
    return brought


def test_the_lock_satisfies_pyprojects_dependencies() -> None:
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    assert _image_python() in SpecifierSet(project["requires-python"])
    unsatisfied = _unsatisfied(project["dependencies"], LOCK.read_text(), _image_environment())
    assert unsatisfied == [], "run `make lock`: " + "; ".join(unsatisfied)


def test_the_lock_check_sees_a_dependency_the_lock_does_not_satisfy() -> None:
    lock = LOCK.read_text()
    environment = _image_environment()
    assert _unsatisfied(["orjson>=3"], lock, environment) == []
    # What an extra brings is required of the lock too.
    without_uvloop = re.sub(r"^uvloop==.*?(?=^\S)", "", lock, flags=re.MULTILINE | re.DOTALL)
    assert _unsatisfied(["uvicorn[standard]"], without_uvloop, environment) == ["uvloop: not in the lock"]
    assert _unsatisfied(["orjson>=999"], lock, environment) == [
        f"orjson: {_pin(lock, 'orjson')} is not >=999"
    ]
    assert _unsatisfied(["not-locked-anywhere>=1"], lock, environment) == [
        "not-locked-anywhere: not in the lock"
    ]
    assert _unsatisfied(['pywin32>=300; sys_platform == "win32"'], lock, environment) == []


def _pin(lock: str, name: str) -> str:
    for requirement, _hashes in _locked(lock):
        if canonicalize_name(requirement.name) == name:
            return next(iter(requirement.specifier)).version
    raise AssertionError(name)


def test_every_locked_requirement_is_one_release_with_its_hashes() -> None:
    entries = _locked(LOCK.read_text())
    assert len(entries) >= len(
        tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    )
    for requirement, hashes in entries:
        assert requirement.url is None, requirement
        assert [specifier.operator for specifier in requirement.specifier] == ["=="], requirement
        assert hashes, f"{requirement}: no hash, which --require-hashes refuses"
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", digest) for digest in hashes), requirement


def test_the_image_installs_the_lock_alone_and_merlin_without_dependencies() -> None:
    runs = re.findall(r"^RUN (.*)$", (DOCKER / "Dockerfile").read_text(), flags=re.MULTILINE)
    installs = [run for run in runs if "pip install" in run]
    assert any("--require-hashes -r /tmp/requirements.lock" in run for run in installs), installs
    assert any("--no-deps /wheels/" in run for run in installs), installs
    assert all("--require-hashes" in run or "--no-deps" in run for run in installs), installs
    (wheel,) = [run for run in runs if "pip wheel" in run]
    assert "--no-deps" in wheel


def _copied() -> list[str]:
    """What the Dockerfile copies from the build context (not from another stage)."""
    sources = []
    for line in re.findall(r"^COPY (.*)$", (DOCKER / "Dockerfile").read_text(), flags=re.MULTILINE):
        words = line.split()
        if any(word.startswith("--from=") for word in words):
            continue
        sources += [word for word in words[:-1] if not word.startswith("--")]
    return sources


# What a checkout accumulates and no image needs; docker/.env holds the deployment's secrets.
NEVER_SENT = (".venv", ".cache", "var", "tests", "bench", ".git", "docker/.env", "build", "dist")


def test_the_build_context_is_what_the_image_copies() -> None:
    context = build_context(PROJECT_ROOT)
    copied = _copied()
    assert "docker/requirements.lock" in copied
    # What pyproject names for the wheel is in the build: its description and its licence files.
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    assert {project["readme"], *project["license-files"]} <= set(copied)
    for source in copied:
        path = PROJECT_ROOT / source
        assert path.exists(), source
        files = [path] if path.is_file() else [
            file for file in path.rglob("*") if file.is_file() and "__pycache__" not in file.parts
        ]  # fmt: skip
        assert files, source
        for file in files:
            assert str(file.relative_to(PROJECT_ROOT)) in context, f"{file} is not sent to the build"
    for sent in context:
        assert not sent.startswith(tuple(f"{left_out}/" for left_out in NEVER_SENT)), sent
        assert sent not in NEVER_SENT, sent
        assert "__pycache__" not in sent.split("/"), sent


def test_the_build_context_leaves_out_what_a_checkout_accumulates(tmp_path: Path) -> None:
    shutil.copy(PROJECT_ROOT / ".dockerignore", tmp_path / ".dockerignore")
    wanted = {
        "pyproject.toml",
        "README.md",
        "LICENSE",
        "docker/requirements.lock",
        "merlin/cli.py",
        "kernel/settings.py",
    }
    accumulated = {
        ".venv/bin/python", ".cache/compose/bin/docker-compose", "var/merlin.db", "tests/unit/test_x.py",
        "bench/results/run.json", ".git/HEAD", "docker/.env", "merlin/__pycache__/cli.cpython-311.pyc",
        "merlin.egg-info/PKG-INFO", "build/lib/merlin/cli.py", "docs/DESIGN.md", "docker/compose.yaml",
    }  # fmt: skip
    for name in wanted | accumulated:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    files = {path for path in build_context(tmp_path) if (tmp_path / path).is_file()}
    assert files == wanted | {".dockerignore"}
