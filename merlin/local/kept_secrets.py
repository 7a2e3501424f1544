"""Secrets that `merlin dev` keeps under ``MERLIN_LOCAL_VAR_DIR`` (``var/``; readable by this user only)
across runs."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from merlin.local.settings import LocalSettings


@dataclass(frozen=True)
class KeptFiles:
    """Where each kept secret lives, under one directory."""

    var_dir: Path

    @classmethod
    def configured(cls) -> KeptFiles:
        """Under ``MERLIN_LOCAL_VAR_DIR`` (``kernel.state_dirs.default_var_dir()`` by default)."""
        return cls(LocalSettings().var_dir)

    @property
    def admin_token(self) -> Path:
        return self.var_dir / "admin.token"

    @property
    def auth_secret(self) -> Path:  # signs development JWTs (HS256)
        return self.var_dir / "auth.secret"

    @property
    def dev_token(self) -> Path:  # a ready JWT for the README's session
        return self.var_dir / "dev.token"

    def user_token(self, user: str) -> Path:
        """A ready JWT of one of `merlin dev`'s users: alice's is the README's ``dev.token``."""
        return self.dev_token if user == "alice" else self.var_dir / f"dev-{user}.token"

    @property
    def endpoint_keys(self) -> Path:  # seals endpoint secrets (Fernet)
        return self.var_dir / "endpoints.keys"


def kept_secret(path: Path, make: Callable[[], str] = lambda: secrets.token_urlsafe(48)) -> str:
    """The secret kept in ``path``, made (by ``make``, readable by this user only) when missing."""
    if path.exists():
        return path.read_text().strip()
    secret = make()
    write_private(path, secret)
    return secret


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (replacing it), readable by this user only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text + "\n")
