"""Endpoint secrets as the settings topic holds them: sealed with Fernet under keys from the environment.

``MERLIN_ENDPOINTS_SECRET_KEYS`` lists Fernet keys, comma-separated: the first
seals, every one opens. To rotate, put a new key first, run
``merlin endpoints reseal`` (every stored secret sealed again under it), then
drop the old key. A secret is shown only by its fingerprint.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from kernel.errors import InfrastructureError


class SecretUnreadable(InfrastructureError):
    """A sealed secret none of the keys opens."""


def fingerprint(secret: str) -> str:
    """What may be shown of a secret: enough to tell two apart, nothing to sign with."""
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:16]


def new_key() -> str:
    """A fresh key for MERLIN_ENDPOINTS_SECRET_KEYS."""
    return Fernet.generate_key().decode()


class SecretBox:
    """Seals and opens endpoint secrets; the first key seals, every key opens."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise InfrastructureError(
                "MERLIN_ENDPOINTS_SECRET_KEYS is empty: endpoint secrets are sealed with it "
                "(`merlin endpoints new-key` prints one)"
            )
        try:
            self._fernet = MultiFernet([Fernet(key.strip().encode()) for key in keys])
        except ValueError:
            raise InfrastructureError(
                "MERLIN_ENDPOINTS_SECRET_KEYS: each key must be 32 url-safe base64-encoded bytes "
                "(`merlin endpoints new-key` prints one)"
            ) from None

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def open(self, sealed: str) -> str:
        return _opened(lambda: self._fernet.decrypt(sealed.encode())).decode()

    def reseal(self, sealed: str) -> str:
        """``sealed`` sealed again under the first key."""
        return _opened(lambda: self._fernet.rotate(sealed.encode())).decode()


def _opened(work: Callable[[], bytes]) -> bytes:
    try:
        return work()
    except InvalidToken:
        raise SecretUnreadable(
            "an endpoint secret is sealed under a key not in MERLIN_ENDPOINTS_SECRET_KEYS"
        ) from None
