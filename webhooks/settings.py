"""Settings every service that handles endpoint definitions shares (``MERLIN_ENDPOINTS_*``)."""

from __future__ import annotations

from pydantic import SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from webhooks.secret_box import SecretBox
from webhooks.url_safety import AllowedNetworks


class EndpointsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MERLIN_ENDPOINTS_", extra="ignore")

    # Inner networks endpoints may reach besides public addresses, e.g. 10.0.0.0/8,127.0.0.0/8.
    # Link-local and cloud metadata addresses only by a network inside them (webhooks.url_safety).
    allow_networks: str = ""
    # Every inner network at once (0.0.0.0/0,::/0): still never link-local or metadata addresses.
    allow_private: bool = False
    # Fernet keys, comma-separated: the first seals endpoint secrets in the settings topic, all open.
    secret_keys: SecretStr = SecretStr("")

    @field_validator("allow_networks")
    @classmethod
    def _networks(cls, value: str) -> str:
        AllowedNetworks.parse(value)
        return value

    @property
    def allowed_networks(self) -> AllowedNetworks:
        """What endpoints may reach besides public addresses."""
        listed = AllowedNetworks.parse(self.allow_networks)
        if self.allow_private:
            return AllowedNetworks((*listed.networks, *AllowedNetworks.parse("0.0.0.0/0,::/0").networks))
        return listed

    @property
    def keys(self) -> list[str]:
        return [key.strip() for key in self.secret_keys.get_secret_value().split(",") if key.strip()]

    @property
    def keyed(self) -> bool:
        return bool(self.keys)

    def box(self) -> SecretBox:
        """Seals and opens with these keys; an error naming the variable if there are none."""
        return SecretBox(self.keys)
