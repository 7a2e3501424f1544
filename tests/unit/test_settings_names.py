"""Which environment variables set merlin's settings, and which do not."""

from __future__ import annotations

import io
import re
import subprocess
import tokenize
from pathlib import Path

import pytest

from admin_api.settings import AdminApiSettings
from forwarder.settings import ForwarderSettings
from kernel.settings import KafkaSettings, LoggingSettings
from merlin.settings_registry import READ_BY, SETTINGS, known_names, unknown_variables
from tests import PROJECT_ROOT


def test_the_shared_variables_set_the_admin_api_and_the_forwarder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MERLIN_ADMIN_TOKEN", "admin-token-of-16+")
    monkeypatch.setenv("MERLIN_FORWARDER_GROUP_ID", "group-a")
    monkeypatch.setenv("MERLIN_ENDPOINTS_FILE", "/etc/merlin/endpoints.toml")
    admin, forwarder = AdminApiSettings(), ForwarderSettings()
    assert admin.token is not None
    assert admin.token.get_secret_value() == "admin-token-of-16+"
    assert admin.forwarder_group == forwarder.group_id == "group-a"
    assert str(admin.endpoints_file) == str(forwarder.endpoints_file) == "/etc/merlin/endpoints.toml"


def test_variables_named_after_a_field_alone_set_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    # A shell's TOKEN (a caller's JWT in the README's session) must not become the admin token.
    for name in ("MERLIN_ADMIN_TOKEN", "MERLIN_FORWARDER_GROUP_ID", "MERLIN_ENDPOINTS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TOKEN", "someone-elses-token")
    monkeypatch.setenv("FORWARDER_GROUP", "group-b")
    monkeypatch.setenv("ENDPOINTS_FILE", "/tmp/endpoints.toml")
    admin, forwarder = AdminApiSettings(), ForwarderSettings()
    assert admin.token is None
    assert admin.forwarder_group == "merlin-forwarder"
    assert admin.endpoints_file is None
    assert forwarder.endpoints_file is None


# Misspellings the tests use on purpose: the scan of the checkout below passes over them.
MISSPELT = {
    "MERLIN_WRITE_API_DELIVERY_TIMOUT_MS": "MERLIN_WRITE_API_DELIVERY_TIMEOUT_MS",
    "MERLIN_KAFKA_BOOTSTRAP_SERVER": "MERLIN_KAFKA_BOOTSTRAP_SERVERS",
    "MERLIN_LOG_LEVL": "MERLIN_LOG_LEVEL",
}
UNRELATED = "MERLIN_NOTHING_LIKE_ANY"
SHIPPED = (
    "domain",
    "kernel",
    "read_store",
    "webhooks",
    "write_api",
    "read_api",
    "forwarder",
    "admin_api",
    "merlin",
)


def test_every_settings_class_is_registered() -> None:
    declared = {
        match
        for package in SHIPPED
        for path in (PROJECT_ROOT / package).rglob("*.py")
        for match in re.findall(r"^class (\w+)\([^)]*\bBaseSettings\)", path.read_text(), re.MULTILINE)
    }
    assert declared == {settings.__name__ for settings in SETTINGS}


def test_a_field_is_known_by_its_prefix_and_name_or_by_its_alias() -> None:
    known = known_names()
    for settings in SETTINGS:
        prefix = str(settings.model_config.get("env_prefix", ""))
        for name, info in settings.model_fields.items():
            expected = info.validation_alias if isinstance(info.validation_alias, str) else f"{prefix}{name}"
            assert expected.upper() in known, (settings.__name__, name)
    assert {"MERLIN_ADMIN_TOKEN", "MERLIN_ADMIN_URL", "MERLIN_LOCAL_SERVICES_FORKED"} <= known
    assert f"{AdminApiSettings.model_config['env_prefix']}TOKEN" not in known  # the alias alone


def test_every_merlin_variable_the_checkout_names_is_one_merlin_knows() -> None:
    # Code, tests, benchmarks, deployment and documents: a variable they set or describe is a setting,
    # so that neither a real run of the tests nor a reader's copy trips the check.
    known = known_names()
    prefixes = {name[: index + 1] for name in known for index, char in enumerate(name) if char == "_"}
    # The files git tracks: what a run writes beside them (examples hypothesis keeps, a test's
    # temporary copy) is no one's text, and changes while other tests run.
    tracked = subprocess.run(
        ["git", "ls-files", "-z"], cwd=PROJECT_ROOT, capture_output=True, check=True
    ).stdout.decode()
    files = [
        PROJECT_ROOT / name
        for name in tracked.split("\0")
        if name
        and Path(name).suffix in (".py", ".md", ".yaml", ".yml", ".toml", ".env", "")
        and (PROJECT_ROOT / name).is_file()
    ]
    named = {
        (name, str(path.relative_to(PROJECT_ROOT)))
        for path in files
        for text in _prose(path)
        for name in re.findall(r"\bMERLIN_[A-Z0-9_]*", text)
    }
    strays = sorted(
        (name, path)
        for name, path in named
        if name not in known and name not in prefixes and name not in MISSPELT and name != UNRELATED
    )
    assert strays == []


def _prose(path: Path) -> list[str]:
    """What in ``path`` may name a variable: all of it, but only the strings and comments of Python
    (a constant named like a variable is none)."""
    text = path.read_text(errors="replace")
    if path.suffix != ".py":
        return [text]
    tokens = tokenize.generate_tokens(io.StringIO(text).readline)
    # From Python 3.12 an f-string's text is tokens of its own.
    kinds = {tokenize.STRING, tokenize.COMMENT, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}
    return [token.string for token in tokens if token.type in kinds]


@pytest.mark.parametrize(("given", "meant"), sorted(MISSPELT.items()))
def test_a_misspelt_variable_is_named_with_the_closest_setting(given: str, meant: str) -> None:
    assert unknown_variables({given: "5", "PATH": "/bin"}) == [
        f"{given} is not a setting merlin knows; did you mean {meant}?"
    ]


def test_variables_are_compared_in_capitals_as_pydantic_reads_them() -> None:
    assert unknown_variables({"merlin_log_level": "debug"}) == []
    assert unknown_variables({"merlin_log_levl": "debug"}) == [
        "merlin_log_levl is not a setting merlin knows; did you mean MERLIN_LOG_LEVEL?"
    ]


def test_a_variable_like_no_setting_is_named_alone() -> None:
    assert unknown_variables({UNRELATED: "1"}) == [
        f"{UNRELATED} is not a setting merlin knows (docs/settings.md lists them)"
    ]


def test_the_variables_read_directly_and_other_namespaces_pass() -> None:
    environ = {
        "MERLIN_ADMIN_URL": "http://x",
        "MERLIN_LOCAL_SERVICES_FORKED": "1",
        "OTEL_TRACES_EXPORTER": "otlp",
    }
    assert unknown_variables(environ) == []


def test_every_service_reads_the_settings_it_is_checked_for() -> None:
    assert set(READ_BY) == {"write-api", "read-api", "admin-api", "forwarder", "dev", "all"}
    assert set(READ_BY["all"]) == set(SETTINGS)
    assert set(READ_BY["dev"]) == {
        settings for name in READ_BY if name != "all" for settings in READ_BY[name]
    }
    for service in ("write-api", "read-api", "admin-api", "forwarder"):
        assert KafkaSettings in READ_BY[service]
        assert LoggingSettings in READ_BY[service]
