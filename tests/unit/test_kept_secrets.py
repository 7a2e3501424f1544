"""The secrets `merlin dev` keeps live where MERLIN_LOCAL_VAR_DIR says, not in the checkout."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from merlin.local.kept_secrets import KeptFiles, kept_secret
from tests import PROJECT_ROOT


def test_kept_secrets_follow_the_var_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MERLIN_LOCAL_VAR_DIR", str(tmp_path / "elsewhere"))
    kept = KeptFiles.configured()
    paths = [kept.admin_token, kept.auth_secret, kept.dev_token, kept.endpoint_keys]
    assert all(path.parent == tmp_path / "elsewhere" for path in paths)
    secret = kept_secret(kept.auth_secret)
    assert kept_secret(kept.auth_secret) == secret  # kept across runs
    assert stat.S_IMODE(kept.auth_secret.stat().st_mode) == 0o600


def test_without_a_var_dir_they_are_in_the_checkouts_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MERLIN_LOCAL_VAR_DIR", raising=False)
    assert KeptFiles.configured().admin_token == PROJECT_ROOT / "var" / "admin.token"
