"""Settings every service that handles endpoint definitions shares (``MERLIN_ENDPOINTS_*``)."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from webhooks.secret_box import SecretBox


class EndpointsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MERLIN_ENDPOINTS_", extra="ignore")

    # Endpoints may point at loopback, private and link-local addresses (development, tests).
    allow_private: bool = False
    # Fernet keys, comma-separated: the first seals endpoint secrets in the settings topic, all open.
    secret_keys: SecretStr = SecretStr("")

    @property
    def keys(self) -> list[str]:
        return [key.strip() for key in self.secret_keys.get_secret_value().split(",") if key.strip()]

    @property
    def keyed(self) -> bool:
        return bool(self.keys)

    def box(self) -> SecretBox:
        """Seals and opens with these keys; an error naming the variable if there are none."""
        return SecretBox(self.keys)
