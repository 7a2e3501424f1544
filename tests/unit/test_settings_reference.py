"""docs/settings.md is what the settings classes say, and they say something of every setting."""

from __future__ import annotations

from merlin.settings_reference import REFRESH, render
from merlin.settings_registry import SETTINGS
from tests import PROJECT_ROOT


def test_every_setting_is_described() -> None:
    undescribed = [
        f"{settings.__name__}.{name}"
        for settings in SETTINGS
        for name, info in settings.model_fields.items()
        if not (info.description or "").strip()
    ]
    assert undescribed == []


def test_the_settings_reference_is_current() -> None:
    assert (PROJECT_ROOT / "docs" / "settings.md").read_text() == render(), (
        f"docs/settings.md is stale: run `{REFRESH}` (or `make docs-settings`)"
    )
