"""The Helm chart (deploy/helm/merlin) and the Strimzi example, checked by rendering: no cluster runs here.

helm lints and renders the chart, kubeconform validates every manifest against the Kubernetes API's
schemas (strict: no unknown field), and the assertions below hold what rendering cannot show to
merlin's own code: its settings, its commands, the users and ACLs ``merlin acls apply`` grants and
the topics ``merlin topics create`` makes. The tools come from ``make chart-tools`` (part of
``make unit`` and ``make test``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from admin_api.settings import AdminApiSettings
from forwarder.settings import ForwarderSettings
from kernel.settings import KafkaSettings
from kernel.topics import topic_plans
from merlin.cli import build_parser
from merlin.kafka_access import AccessSettings, grants
from merlin.settings_registry import READ_BY, unknown_variables
from read_api.settings import ReadApiSettings
from tests import PROJECT_ROOT
from tests.kube_tools import cached, kind_schema, kubernetes_version, schema_file_name, schema_locations
from write_api.settings import WriteApiSettings

CHART = PROJECT_ROOT / "deploy" / "helm" / "merlin"
EXAMPLES = PROJECT_ROOT / "deploy" / "helm" / "examples"
EVERYTHING = PROJECT_ROOT / "tests" / "unit" / "data" / "helm" / "everything.yaml"
VALUES = {"default": None, "everything": EVERYTHING, "strimzi": EXAMPLES / "values-strimzi.yaml"}

Manifest = dict[str, Any]

# Each API by its component label: its settings, their variables' prefix, its user's field in AccessSettings.
APIS: dict[str, tuple[type[BaseSettings], str, str]] = {
    "write-api": (WriteApiSettings, "MERLIN_WRITE_API_", "write_api"),
    "read-api": (ReadApiSettings, "MERLIN_READ_API_", "read_api"),
    "admin-api": (AdminApiSettings, "MERLIN_ADMIN_API_", "admin_api"),
}
PARTS = (*APIS, "forwarder")
# Variables that hold a secret: never written in a manifest, read from the Secret. (A
# MERLIN_KAFKA_CLIENT_CONFIG may be written: the values schema refuses its secret properties.)
SECRET_VARIABLES = re.compile(
    r"(_TOKEN|_SECRET|_PASSWORD|_KEY|_KEYS)$|^MERLIN_READ_STORE_URL$|^OTEL_EXPORTER_OTLP_([A-Z]+_)?HEADERS$"
)


def tool(variable: str) -> Path:
    path = cached(variable)
    if not path.exists():
        pytest.fail(f"{path} is missing: `make chart-tools` makes it (also part of `make unit`, `make test`)")
    return path


def helm(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(tool("HELM")), *arguments], capture_output=True, text=True, check=False)


def render_text(values: Path | None) -> str:
    """The chart rendered as release ``merlin`` in namespace ``chat``, hooks included."""
    files = ["-f", str(values)] if values else []
    result = helm("template", "merlin", str(CHART), "--namespace", "chat", *files)
    assert result.returncode == 0, result.stderr
    return result.stdout


def documents(text: str) -> list[Manifest]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's, where PyYAML has it: 10 times faster
    return [document for document in yaml.load_all(text, Loader=loader) if document]


@pytest.fixture(scope="module")
def rendered() -> dict[str, str]:
    """Each values file's rendering, as text."""
    return {name: render_text(values) for name, values in VALUES.items()}


@pytest.fixture(scope="module")
def parsed(rendered: dict[str, str]) -> dict[str, list[Manifest]]:
    """Each values file's rendering, as manifests: parsed once for every test that reads them."""
    return {name: documents(text) for name, text in rendered.items()}


@pytest.fixture(params=sorted(VALUES))
def manifests(request: pytest.FixtureRequest, parsed: dict[str, list[Manifest]]) -> list[Manifest]:
    """The manifests of one rendering (each values file in turn)."""
    return parsed[request.param]


@pytest.fixture
def default(parsed: dict[str, list[Manifest]]) -> list[Manifest]:
    return parsed["default"]


@pytest.fixture
def everything(parsed: dict[str, list[Manifest]]) -> list[Manifest]:
    return parsed["everything"]


def of_kind(manifests: list[Manifest], kind: str) -> dict[str, Manifest]:
    return {m["metadata"]["name"]: m for m in manifests if m["kind"] == kind}


def workloads(manifests: list[Manifest]) -> dict[str, Manifest]:
    """Deployments, StatefulSets and Jobs by their component label."""
    return {
        m["metadata"]["labels"]["app.kubernetes.io/component"]: m
        for m in manifests
        if m["kind"] in {"Deployment", "StatefulSet", "Job"}
    }


def container(workload: Manifest) -> dict[str, Any]:
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    result: dict[str, Any] = only
    return result


def env(workload: Manifest) -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in container(workload)["env"]}


def plain_env(workload: Manifest) -> dict[str, str]:
    return {name: variable["value"] for name, variable in env(workload).items() if "value" in variable}


def kubeconform(path: Path) -> subprocess.CompletedProcess[str]:
    locations = [option for location in schema_locations() for option in ("-schema-location", location)]
    for variable in ("KUBE_SCHEMAS", "CRD_SCHEMAS"):
        tool(variable)
    command = [str(tool("KUBECONFORM")), "-strict", "-summary", "-kubernetes-version", kubernetes_version()]
    return subprocess.run([*command, *locations, str(path)], capture_output=True, text=True, check=False)


# --- helm and kubeconform -------------------------------------------------------------------------


@pytest.mark.parametrize("values", sorted(VALUES))
def test_helm_lint_strict_passes(values: str) -> None:
    files = ["-f", str(VALUES[values])] if VALUES[values] else []
    result = helm("lint", "--strict", str(CHART), *files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("values", sorted(VALUES))
def test_kubeconform_strict_accepts_every_rendered_manifest(
    values: str, rendered: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / f"{values}.yaml"
    path.write_text(rendered[values])
    result = kubeconform(path)
    count = len(documents(rendered[values]))
    assert result.returncode == 0, result.stdout + result.stderr
    # Every manifest found its schema: none skipped, none missing.
    assert f"{count} resources found in 1 file - Valid: {count}, Invalid: 0, Errors: 0, Skipped: 0" in (
        result.stdout
    )


@pytest.mark.parametrize(
    ("where", "change"),
    [
        ("an unknown field in a container", ("imagePullPolicy: IfNotPresent", "imagePulPolicy: Always")),
        ("a string where a boolean goes", ("readOnlyRootFilesystem: true", 'readOnlyRootFilesystem: "yes"')),
        ("an unknown ServiceMonitor field", ("relabelings:", "relabelling:")),
        ("a kind the API does not have", ("kind: PodDisruptionBudget", "kind: PodDisruptionBudgit")),
    ],
)
def test_kubeconform_refuses_what_the_api_would(
    where: str, change: tuple[str, str], rendered: dict[str, str], tmp_path: Path
) -> None:
    old, new = change
    assert old in rendered["everything"], where
    path = tmp_path / "broken.yaml"
    path.write_text(rendered["everything"].replace(old, new, 1))
    result = kubeconform(path)
    assert result.returncode != 0, f"{where} passed: {result.stdout}"


@pytest.mark.parametrize(
    ("option", "refusal"),
    [
        ("writeApi.replica=3", "additional properties 'replica' not allowed"),
        ("kafka.securityProtocol=SASL", "/kafka/securityProtocol"),
        ("forwarder.processes=0", "/forwarder/processes"),
        # (helm names a random place for a refused property name; the name itself is right)
        ("env.MERLIN_ADMIN_TOKEN=an-admin-token-inline", "invalid propertyName 'MERLIN_ADMIN_TOKEN'"),
        ("forwarder.env.MERLIN_KAFKA_SASL_PASSWORD=x", "invalid propertyName 'MERLIN_KAFKA_SASL_PASSWORD'"),
        ("writeApi.env.MERLIN_KAFKA_SASL_PASSWORD=x", "invalid propertyName 'MERLIN_KAFKA_SASL_PASSWORD'"),
        (
            "readApi.env.MERLIN_READ_STORE_URL=postgresql://m:pw@db/m",
            "invalid propertyName 'MERLIN_READ_STORE_URL'",
        ),
        # Settings that may carry a secret, whatever their name says.
        (
            "env.OTEL_EXPORTER_OTLP_HEADERS=authorization=Bearer abc",
            "invalid propertyName 'OTEL_EXPORTER_OTLP_HEADERS'",
        ),
        (
            "env.OTEL_EXPORTER_OTLP_TRACES_HEADERS=x",
            "invalid propertyName 'OTEL_EXPORTER_OTLP_TRACES_HEADERS'",
        ),
        ("adminApi.env.MERLIN_KAFKA_CLIENT_CONFIG={}", "invalid propertyName 'MERLIN_KAFKA_CLIENT_CONFIG'"),
        ("env.MERLIN_ENDPOINTS_SECRET_KEYS=x", "invalid propertyName 'MERLIN_ENDPOINTS_SECRET_KEYS'"),
        ("env.WEBHOOK_SIGNING_KEYS=x", "invalid propertyName 'WEBHOOK_SIGNING_KEYS'"),
        ("env.WEBHOOK_SIGNING_KEY=x", "invalid propertyName 'WEBHOOK_SIGNING_KEY'"),
        # librdkafka's passwords, secrets and keys: MERLIN_KAFKA_CLIENT_CONFIG is written inline.
        (r"kafka.clientConfig.ssl\.key\.password=hunter2", "invalid propertyName 'ssl.key.password'"),
        (r"kafka.clientConfig.ssl\.key\.pem=x", "invalid propertyName 'ssl.key.pem'"),
        (r"kafka.clientConfig.ssl\.keystore\.location=x", "invalid propertyName 'ssl.keystore.location'"),
        (r"kafka.clientConfig.ssl\.keystore\.password=x", "invalid propertyName 'ssl.keystore.password'"),
        (r"kafka.clientConfig.sasl\.password=x", "invalid propertyName 'sasl.password'"),
        (
            r"kafka.clientConfig.sasl\.oauthbearer\.client\.secret=x",
            "invalid propertyName 'sasl.oauthbearer.client.secret'",
        ),
        (r"kafka.clientConfig.sasl\.jaas\.config=x", "invalid propertyName 'sasl.jaas.config'"),
    ],
)
def test_the_values_schema_refuses_a_misspelt_or_secret_value(option: str, refusal: str) -> None:
    result = helm("template", "merlin", str(CHART), "--set", option)
    assert result.returncode != 0, option
    assert refusal in result.stderr


@pytest.mark.parametrize(
    "option",
    [
        "env.MERLIN_LOG_LEVEL=DEBUG",
        "env.OTEL_EXPORTER_OTLP_ENDPOINT=http://collector:4317",
        r"kafka.clientConfig.ssl\.key\.location=/etc/tls/client.key",
        r"kafka.clientConfig.ssl\.certificate\.pem=x",
        r"kafka.clientConfig.socket\.keepalive\.enable=true",
    ],
)
def test_the_values_schema_takes_plain_settings(option: str) -> None:
    result = helm("template", "merlin", str(CHART), "--set-string", option)
    assert result.returncode == 0, result.stderr


def test_every_env_value_refuses_the_same_names() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    guards = [schema["properties"]["env"]["propertyNames"]] + [
        schema["properties"][part]["properties"]["env"]["propertyNames"]
        for part in ("writeApi", "readApi", "adminApi", "forwarder")
    ]
    assert all(guard == guards[0] for guard in guards)


# --- what every pod is ------------------------------------------------------------------------------


def test_every_container_runs_as_the_images_user_on_a_read_only_root(manifests: list[Manifest]) -> None:
    pods = [w["spec"]["template"]["spec"] for w in workloads(manifests).values()]
    assert pods
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001  # docker/Dockerfile's `useradd --uid 10001`
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        # Service links would name the chart's Services MERLIN_WRITE_API_PORT=tcp://..., a setting of merlin.
        assert pod["enableServiceLinks"] is False
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        for each in pod["containers"]:
            context = each["securityContext"]
            assert context["runAsNonRoot"] is True
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}
            # The one writable place: an API's --workers keep their metrics files in a temporary folder.
            (tmp,) = [mount for mount in each["volumeMounts"] if mount["mountPath"] == "/tmp"]
            assert "emptyDir" in volumes[tmp["name"]]
            assert each["resources"]["requests"]
            assert each["resources"]["limits"]


def test_the_dockerfile_user_is_the_one_the_chart_runs_as() -> None:
    dockerfile = (PROJECT_ROOT / "docker" / "Dockerfile").read_text()
    assert re.search(r"useradd .*--uid 10001 merlin", dockerfile)
    assert re.search(r"^USER merlin$", dockerfile, re.MULTILINE)


def test_each_part_runs_a_command_merlin_understands(manifests: list[Manifest]) -> None:
    commands = {part: container(w)["args"] for part, w in workloads(manifests).items()}
    assert set(PARTS) <= set(commands)
    for part, args in commands.items():
        parsed = build_parser().parse_args(args)  # exits (fails the test) on an unknown command
        assert parsed.command == args[0], part


def test_every_merlin_variable_the_chart_sets_is_a_setting(manifests: list[Manifest]) -> None:
    used = {name for w in workloads(manifests).values() for name in env(w) if name.startswith("MERLIN_")}
    assert unknown_variables(dict.fromkeys(used, "")) == []


def test_merlins_settings_accept_what_each_part_is_given(
    manifests: list[Manifest], monkeypatch: pytest.MonkeyPatch
) -> None:
    for workload in workloads(manifests).values():
        variables = plain_env(workload)
        # What the Secret would hold: long enough for every bound (a JWT secret's 32 characters).
        variables.update(
            {name: "s" * 40 for name, variable in env(workload).items() if "valueFrom" in variable}
        )
        with monkeypatch.context() as patch:
            for name in [name for name in os.environ if name.startswith("MERLIN_")]:
                patch.delenv(name)
            for name, value in variables.items():
                patch.setenv(name, value)
            for settings in READ_BY["all"]:
                settings()  # raises on a value merlin refuses (a number printed 6.048e+08, bad JSON)


def test_the_listeners_answer_on_the_pods_address_at_the_ports_the_services_name(
    manifests: list[Manifest],
) -> None:
    parts = workloads(manifests)
    services = of_kind(manifests, "Service")
    for part, (settings, prefix, _user) in APIS.items():
        variables = plain_env(parts[part])
        ports = {port["name"]: port["containerPort"] for port in container(parts[part])["ports"]}
        assert variables[f"{prefix}HOST"] == variables[f"{prefix}METRICS_HOST"] == "0.0.0.0"
        assert ports == {
            "http": int(variables[f"{prefix}PORT"]),
            "metrics": int(variables[f"{prefix}METRICS_PORT"]),
        }
        assert ports["metrics"] == settings.model_fields["metrics_port"].default
        (service_port,) = services[f"merlin-{part}"]["spec"]["ports"]
        assert service_port["targetPort"] == "http"
    forwarder = plain_env(parts["forwarder"])
    assert forwarder["MERLIN_FORWARDER_METRICS_HOST"] == "0.0.0.0"
    assert (
        int(forwarder["MERLIN_FORWARDER_METRICS_PORT"])
        == ForwarderSettings.model_fields["metrics_port"].default
    )


def test_probes_ask_healthz_for_liveness_and_readyz_for_readiness(manifests: list[Manifest]) -> None:
    parts = workloads(manifests)
    for part in PARTS:
        each = container(parts[part])
        ports = {port["name"]: port["containerPort"] for port in each["ports"]}
        # An API's liveness asks its metrics listener: past MERLIN_HTTP_MAX_CONNECTIONS the http port answers
        # 503 to every new connection, and kubelet would restart an overloaded, healthy pod. Readiness asks
        # the http port: whether the pod can take traffic. The forwarder's first process has one listener.
        alive_port, ready_port = ("metrics-0", "metrics-0") if part == "forwarder" else ("metrics", "http")
        for probe, path, port in (
            ("livenessProbe", "/healthz", alive_port),
            ("startupProbe", "/healthz", alive_port),
            ("readinessProbe", "/readyz", ready_port),
        ):
            check = each[probe]["httpGet"]
            assert (check["path"], check["port"]) == (path, port), (part, probe)
        if part == "forwarder":
            assert ports["metrics-0"] == 9102
        else:
            settings = APIS[part][0].model_fields
            assert ports["http"] == settings["port"].default
            assert ports["metrics"] == settings["metrics_port"].default


# --- secrets -------------------------------------------------------------------------------------


def test_no_secret_value_is_written_in_the_chart(manifests: list[Manifest]) -> None:
    assert of_kind(manifests, "Secret") == {}
    secrets_seen = set()
    for part, workload in workloads(manifests).items():
        for name, variable in env(workload).items():
            if SECRET_VARIABLES.search(name):
                assert "value" not in variable, f"{part}: {name} is written inline"
                assert variable["valueFrom"]["secretKeyRef"]["name"] == "merlin", (part, name)
                secrets_seen.add(name)
    assert {"MERLIN_ADMIN_TOKEN", "MERLIN_ENDPOINTS_SECRET_KEYS", "MERLIN_READ_STORE_URL"} <= secrets_seen
    assert "MERLIN_KAFKA_SASL_PASSWORD" in secrets_seen


def test_extra_secret_env_is_read_from_the_secret_in_every_pod(everything: list[Manifest]) -> None:
    parts = workloads(everything)
    assert set(PARTS) <= set(parts)
    for part, workload in parts.items():
        headers = env(workload)["OTEL_EXPORTER_OTLP_HEADERS"]
        assert headers == {
            "name": "OTEL_EXPORTER_OTLP_HEADERS",
            "valueFrom": {"secretKeyRef": {"name": "merlin", "key": "otlp-headers"}},
        }, part


def test_a_kafka_client_config_from_the_secret_replaces_the_inline_one() -> None:
    secret = [
        "--set",
        "extraSecretEnv[0].name=MERLIN_KAFKA_CLIENT_CONFIG,extraSecretEnv[0].key=kafka-client-config",
    ]
    tls = ["--set", "kafka.tls.caSecret=merlin-cluster-ca-cert"]
    result = helm("template", "merlin", str(CHART), *secret, *tls)
    assert result.returncode == 0, result.stderr
    for part, workload in workloads(documents(result.stdout)).items():
        variables = [v for v in container(workload)["env"] if v["name"] == "MERLIN_KAFKA_CLIENT_CONFIG"]
        assert variables == [
            {
                "name": "MERLIN_KAFKA_CLIENT_CONFIG",
                "valueFrom": {"secretKeyRef": {"name": "merlin", "key": "kafka-client-config"}},
            }
        ], part
    # Properties of kafka.clientConfig would be lost: the chart says so rather than drop them.
    inline = ["--set", "kafka.clientConfig.acks=all"]
    result = helm("template", "merlin", str(CHART), *secret, *inline)
    assert result.returncode != 0
    assert "leave kafka.clientConfig empty" in result.stderr
    twice = [
        "--set",
        "env.MERLIN_LOG_LEVEL=DEBUG,extraSecretEnv[0].name=MERLIN_LOG_LEVEL,extraSecretEnv[0].key=k",
    ]
    result = helm("template", "merlin", str(CHART), *twice)
    assert result.returncode != 0
    assert "MERLIN_LOG_LEVEL is both in env and in extraSecretEnv" in result.stderr


def test_each_service_reads_what_it_needs_and_no_more(default: list[Manifest]) -> None:
    parts = workloads(default)
    needs = {
        "write-api": {"MERLIN_AUTH_JWT_SECRET", "MERLIN_KAFKA_SASL_PASSWORD"},
        "read-api": {"MERLIN_AUTH_JWT_SECRET", "MERLIN_KAFKA_SASL_PASSWORD", "MERLIN_READ_STORE_URL"},
        "admin-api": {
            "MERLIN_AUTH_JWT_SECRET", "MERLIN_KAFKA_SASL_PASSWORD", "MERLIN_ADMIN_TOKEN",
            "MERLIN_ENDPOINTS_SECRET_KEYS",
        },
        "forwarder": {"MERLIN_KAFKA_SASL_PASSWORD", "MERLIN_READ_STORE_URL", "MERLIN_ENDPOINTS_SECRET_KEYS"},
        "db-upgrade": {"MERLIN_READ_STORE_URL"},
        "topics": {"MERLIN_KAFKA_SASL_PASSWORD"},
    }  # fmt: skip
    read = {part: {n for n, v in env(w).items() if "valueFrom" in v} for part, w in parts.items()}
    assert read == needs


def test_each_kafka_client_is_the_user_acls_apply_makes_for_it(manifests: list[Manifest]) -> None:
    parts = workloads(manifests)
    users = {field: AccessSettings.model_fields[f"{field}_user"].default for _s, _p, field in APIS.values()}
    users["forwarder"] = AccessSettings.model_fields["forwarder_user"].default
    keys = set()
    for part in PARTS:
        field = APIS[part][2] if part in APIS else "forwarder"
        assert plain_env(parts[part])["MERLIN_KAFKA_SASL_USERNAME"] == users[field], part
        keys.add(env(parts[part])["MERLIN_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"])
    assert len(keys) == len(PARTS), "each service has a password of its own"


# --- availability and membership -------------------------------------------------------------------


def test_a_disruption_budget_covers_each_part(manifests: list[Manifest]) -> None:
    parts = workloads(manifests)
    budgets = of_kind(manifests, "PodDisruptionBudget").values()
    covered = {}
    for budget in budgets:
        selector = budget["spec"]["selector"]["matchLabels"]
        matching = [
            part
            for part, w in parts.items()
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matching) == 1, (budget["metadata"]["name"], matching)
        covered[matching[0]] = budget["spec"]["maxUnavailable"]
    assert set(covered) == set(PARTS)


def test_the_forwarder_is_a_deployment_without_static_membership(default: list[Manifest]) -> None:
    forwarder = workloads(default)["forwarder"]
    assert forwarder["kind"] == "Deployment"
    assert "MERLIN_FORWARDER_INSTANCE_ID" not in env(forwarder)
    assert container(forwarder)["args"] == ["forwarder", "--processes", "1"]


def test_static_members_are_a_statefulsets_pods_named_by_the_downward_api(everything: list[Manifest]) -> None:
    forwarder = workloads(everything)["forwarder"]
    assert forwarder["kind"] == "StatefulSet"
    instance = env(forwarder)["MERLIN_FORWARDER_INSTANCE_ID"]
    assert instance == {
        "name": "MERLIN_FORWARDER_INSTANCE_ID",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
    }
    governing = of_kind(everything, "Service")[forwarder["spec"]["serviceName"]]
    assert governing["spec"]["clusterIP"] == "None"
    # Three processes: three listeners, 9102 to 9104, each a port of the Service.
    assert container(forwarder)["args"] == ["forwarder", "--processes", "3"]
    ports = {port["name"]: port["containerPort"] for port in container(forwarder)["ports"]}
    assert ports == {"metrics-0": 9102, "metrics-1": 9103, "metrics-2": 9104}
    assert {port["targetPort"] for port in governing["spec"]["ports"]} == set(ports)


# --- metrics ------------------------------------------------------------------------------------------


def test_pods_carry_prometheus_annotations_for_their_metrics_listener(default: list[Manifest]) -> None:
    for part, workload in workloads(default).items():
        if workload["kind"] == "Job":
            continue
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        ports = {port["name"]: port["containerPort"] for port in container(workload)["ports"]}
        metrics = ports["metrics-0" if part == "forwarder" else "metrics"]
        assert annotations == {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(metrics),
            "prometheus.io/path": "/metrics",
        }
    assert of_kind(default, "ServiceMonitor") == {}


def test_service_monitors_scrape_every_listener_under_the_alert_rules_job_names(
    everything: list[Manifest],
) -> None:
    parts = workloads(everything)
    services = list(of_kind(everything, "Service").values())
    monitors = of_kind(everything, "ServiceMonitor")
    alerts = (PROJECT_ROOT / "docker" / "observability" / "prometheus" / "alerts.yaml").read_text()
    scraped: dict[str, set[str]] = {}
    for monitor in monitors.values():
        selector = monitor["spec"]["selector"]["matchLabels"]
        named_ports = {
            port["name"]
            for service in services
            if selector.items() <= service["metadata"]["labels"].items()
            for port in service["spec"]["ports"]
        }
        for endpoint in monitor["spec"]["endpoints"]:
            assert endpoint["port"] in named_ports, endpoint
            assert endpoint["path"] == "/metrics"
            (relabel,) = endpoint["relabelings"]
            assert relabel["targetLabel"] == "job"
            job = relabel["replacement"]
            assert f'job="{job}"' in alerts, f"the alert rules know no job {job}"
            scraped.setdefault(job, set()).add(endpoint["port"])
        assert monitor["metadata"]["labels"]["release"] == "prometheus"
    forwarder_ports = {port["name"] for port in container(parts["forwarder"])["ports"]}
    assert scraped == {
        "merlin-write-api": {"metrics"},
        "merlin-read-api": {"metrics"},
        "merlin-admin-api": {"metrics"},
        "merlin-forwarder": forwarder_ports,
    }
    # The listeners answer without a token: their Services are apart from the APIs' (which may be public).
    for part in APIS:
        metrics = of_kind(everything, "Service")[f"merlin-{part}-metrics"]
        assert metrics["spec"]["clusterIP"] == "None"
        assert [
            port["name"] for port in of_kind(everything, "Service")[f"merlin-{part}"]["spec"]["ports"]
        ] == ["http"]


# --- set-up jobs ---------------------------------------------------------------------------------


def test_set_up_jobs_are_hooks_before_install_and_upgrade_in_order(everything: list[Manifest]) -> None:
    jobs = {part: w for part, w in workloads(everything).items() if w["kind"] == "Job"}
    assert {part: container(job)["args"] for part, job in jobs.items()} == {
        "acls": ["acls", "apply"],
        "topics": ["topics", "create"],
        "db-upgrade": ["db", "upgrade"],
    }
    weights = {}
    for part, job in jobs.items():
        annotations = job["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
        assert "hook-succeeded" in annotations["helm.sh/hook-delete-policy"]
        assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
        weights[part] = int(annotations["helm.sh/hook-weight"])
    assert sorted(weights, key=weights.__getitem__) == ["acls", "topics", "db-upgrade"]


def test_acls_apply_is_off_by_default(default: list[Manifest]) -> None:
    jobs = {part for part, w in workloads(default).items() if w["kind"] == "Job"}
    assert jobs == {"topics", "db-upgrade"}


def test_the_acls_job_gives_each_service_the_user_its_pods_connect_as(everything: list[Manifest]) -> None:
    parts = workloads(everything)
    acls = env(parts["acls"])
    access = AccessSettings.model_fields
    for part in PARTS:
        field = APIS[part][2] if part in APIS else "forwarder"
        user = acls[f"MERLIN_ACCESS_{field.upper()}_USER"]["value"]
        assert user == access[f"{field}_user"].default
        assert user == plain_env(parts[part])["MERLIN_KAFKA_SASL_USERNAME"]
        password = acls[f"MERLIN_ACCESS_{field.upper()}_PASSWORD"]["valueFrom"]["secretKeyRef"]
        assert password == env(parts[part])["MERLIN_KAFKA_SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert (
        acls["MERLIN_FORWARDER_GROUP_ID"]["value"]
        == plain_env(parts["forwarder"])["MERLIN_FORWARDER_GROUP_ID"]
    )
    # The set-up jobs are the cluster's super user, here over PLAIN.
    assert plain_env(parts["acls"])["MERLIN_KAFKA_SASL_USERNAME"] == "admin"
    assert plain_env(parts["topics"])["MERLIN_KAFKA_SASL_MECHANISM"] == "PLAIN"
    assert plain_env(parts["forwarder"])["MERLIN_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"


def test_kafka_tls_gives_librdkafka_the_mounted_ca(everything: list[Manifest]) -> None:
    for part, workload in workloads(everything).items():
        if part == "db-upgrade":
            continue
        config = json.loads(plain_env(workload)["MERLIN_KAFKA_CLIENT_CONFIG"])
        (mount,) = [m for m in container(workload)["volumeMounts"] if m["name"] == "kafka-ca"]
        assert config["ssl.ca.location"] == f"{mount['mountPath']}/ca.crt", part
        assert (
            KafkaSettings(
                security_protocol="SASL_SSL", sasl_username="u", sasl_password="p", client_config=config
            ).client()["ssl.ca.location"]
            == config["ssl.ca.location"]
        )


# --- the Strimzi example ---------------------------------------------------------------------------


def strimzi() -> list[Manifest]:
    return documents((EXAMPLES / "strimzi.yaml").read_text())


def strimzi_validate(resources: list[Manifest]) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    if node is None:
        pytest.fail("the Strimzi example is checked with Node.js, which this machine lacks")
    models = tool("STRIMZI_MODELS").parent
    script = PROJECT_ROOT / "tests" / "strimzi_validate.mjs"
    return subprocess.run(
        [node, str(script), str(models)],
        input=json.dumps(resources),
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_strimzi_example_is_valid_for_strimzis_schema() -> None:
    result = strimzi_validate(strimzi())
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(": valid") == len(strimzi())


@pytest.mark.parametrize(
    ("where", "change"),
    [
        ("an operation Strimzi does not know", ("[Read, AlterConfigs]", "[Read, AlterConfig]")),
        ("a pattern type Strimzi does not know", ("patternType: prefix", "patternType: prefixed")),
        ("a rule without operations", ("operations: [Write, Describe]", "operation: Describe")),
    ],
)
def test_strimzis_schema_refuses_a_broken_example(where: str, change: tuple[str, str]) -> None:
    text = (EXAMPLES / "strimzi.yaml").read_text()
    assert change[0] in text, where
    result = strimzi_validate(documents(text.replace(change[0], change[1], 1)))
    assert result.returncode != 0, where


@pytest.fixture
def merlin_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """merlin's settings as they default, whatever this machine's environment sets."""
    for name in [name for name in os.environ if name.startswith("MERLIN_")]:
        monkeypatch.delenv(name)


@pytest.mark.usefixtures("merlin_defaults")
def test_the_strimzi_topics_are_the_ones_topics_create_makes() -> None:
    values = yaml.safe_load((EXAMPLES / "values-strimzi.yaml").read_text())["kafka"]
    settings = KafkaSettings(partitions=values["partitions"], replication_factor=values["replicationFactor"])
    expected = {plan.name: (plan.partitions, plan.replication, plan.config) for plan in topic_plans(settings)}
    topics = [m for m in strimzi() if m["kind"] == "KafkaTopic"]
    found = {}
    for topic in topics:
        spec = topic["spec"]
        assert set(spec) == {"topicName", "partitions", "replicas", "config"}  # nothing Strimzi ignores
        config = {key: str(value).lower() for key, value in spec["config"].items()}
        found[spec["topicName"]] = (spec["partitions"], spec["replicas"], config)
    assert found == expected


STRIMZI_OPERATIONS = {
    "READ": "Read",
    "WRITE": "Write",
    "DESCRIBE": "Describe",
    "ALTER_CONFIGS": "AlterConfigs",
}


@pytest.mark.usefixtures("merlin_defaults")
def test_the_strimzi_users_have_exactly_the_acls_acls_apply_grants() -> None:
    access = AccessSettings()
    expected = {
        (g.user, g.kind, g.name, "prefix" if g.prefixed else "literal", STRIMZI_OPERATIONS[g.operation])
        for g in grants(KafkaSettings(), ForwarderSettings().group_id, access.users())
    }
    users = [m for m in strimzi() if m["kind"] == "KafkaUser"]
    found = set()
    for user in users:
        spec = user["spec"]
        assert spec["authentication"]["type"] == "scram-sha-512"  # what `merlin acls apply` sets
        assert spec["authorization"]["type"] == "simple"
        for rule in spec["authorization"]["acls"]:
            assert set(rule) == {"resource", "operations"}, rule  # allow (the default), from any host
            assert set(rule["resource"]) == {"type", "name", "patternType"}, rule
            resource = rule["resource"]
            for operation in rule["operations"]:
                found.add(
                    (
                        user["metadata"]["name"],
                        resource["type"],
                        resource["name"],
                        resource["patternType"],
                        operation,
                    )
                )
    assert found == expected
    assert {user["metadata"]["name"] for user in users} == set(access.users().values())


def test_the_chart_reads_the_passwords_strimzi_sets_for_its_users() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    example = yaml.safe_load((EXAMPLES / "values-strimzi.yaml").read_text())
    users = [m for m in strimzi() if m["kind"] == "KafkaUser"]
    by_name = {user["metadata"]["name"]: user for user in users}
    for part, user in values["kafka"]["users"].items():
        reference = by_name[user]["spec"]["authentication"]["password"]["valueFrom"]["secretKeyRef"]
        assert reference == {
            "name": values["existingSecret"],
            "key": values["secretKeys"]["kafkaPasswords"][part],
        }
    assert {m["metadata"]["labels"]["strimzi.io/cluster"] for m in strimzi()} == {"merlin"}
    assert example["kafka"]["bootstrapServers"].startswith("merlin-kafka-bootstrap:")
    assert example["jobs"]["topics"]["enabled"] is False
    assert example["jobs"]["acls"]["enabled"] is False


# --- the schemas kubeconform reads ---------------------------------------------------------------


def test_a_kinds_schema_is_self_contained_strict_and_takes_what_the_api_takes() -> None:
    definitions: dict[str, Any] = {
        "io.k8s.api.x.v1.Thing": {
            "properties": {
                "apiVersion": {"type": "string"},
                "kind": {"type": "string"},
                "spec": {"$ref": "#/definitions/io.k8s.api.x.v1.ThingSpec", "description": "the spec"},
            },
            "x-kubernetes-group-version-kind": [{"group": "x.k8s.io", "kind": "Thing", "version": "v1"}],
        },
        "io.k8s.api.x.v1.ThingSpec": {
            "description": "its spec",
            "properties": {
                "port": {"$ref": "#/definitions/io.k8s.apimachinery.pkg.util.intstr.IntOrString"},
                "cpu": {"$ref": "#/definitions/io.k8s.apimachinery.pkg.api.resource.Quantity"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {"type": "string", "format": "int-or-string"},
        "io.k8s.apimachinery.pkg.api.resource.Quantity": {"type": "string"},
        "io.k8s.api.x.v1.Unused": {"properties": {"a": {"type": "string"}}},
    }
    schema = kind_schema("io.k8s.api.x.v1.Thing", definitions)
    assert schema["additionalProperties"] is False
    assert schema["properties"]["apiVersion"]["enum"] == ["x.k8s.io/v1"]
    assert schema["properties"]["kind"]["enum"] == ["Thing"]
    assert schema["properties"]["spec"] == {"$ref": "#/definitions/io.k8s.api.x.v1.ThingSpec"}
    assert set(schema["definitions"]) == {
        "io.k8s.api.x.v1.ThingSpec",
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
        "io.k8s.apimachinery.pkg.api.resource.Quantity",
    }
    spec = schema["definitions"]["io.k8s.api.x.v1.ThingSpec"]
    assert spec["additionalProperties"] is False
    assert "description" not in spec
    assert spec["properties"]["labels"]["additionalProperties"] == {"type": "string"}
    int_or_string = schema["definitions"]["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]
    assert int_or_string == {"oneOf": [{"type": "string"}, {"type": "integer"}]}
    quantity = schema["definitions"]["io.k8s.apimachinery.pkg.api.resource.Quantity"]
    assert quantity == {"oneOf": [{"type": "string"}, {"type": "number"}]}
    assert schema_file_name({"group": "x.k8s.io", "kind": "Thing", "version": "v1"}) == "thing-x-v1.json"
    assert schema_file_name({"group": "", "kind": "Service", "version": "v1"}) == "service-v1.json"
