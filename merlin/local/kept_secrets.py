"""Secrets that `merlin dev` keeps under ``var/`` (readable by this user only) across runs."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

from kernel.settings import PROJECT_ROOT

ADMIN_TOKEN_FILE = PROJECT_ROOT / "var" / "admin.token"
AUTH_SECRET_FILE = PROJECT_ROOT / "var" / "auth.secret"  # signs development JWTs (HS256)
DEV_TOKEN_FILE = PROJECT_ROOT / "var" / "dev.token"  # a ready JWT for the README's session
ENDPOINT_KEYS_FILE = PROJECT_ROOT / "var" / "endpoints.keys"  # seals endpoint secrets (Fernet)


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
