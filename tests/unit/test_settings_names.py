"""Which environment variables set merlin's settings, and which do not."""

from __future__ import annotations

import pytest

from admin_api.settings import AdminApiSettings
from forwarder.settings import ForwarderSettings


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
