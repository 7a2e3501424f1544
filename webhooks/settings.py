"""Settings every service that handles endpoint definitions shares (``MERLIN_ENDPOINTS_*``)."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from webhooks.secret_box import SecretBox
from webhooks.url_safety import AllowedNetworks


class EndpointsSettings(BaseSettings):
    """How endpoints are checked and their secrets sealed (``MERLIN_ENDPOINTS_*``)."""

    model_config = SettingsConfigDict(env_prefix="MERLIN_ENDPOINTS_", extra="ignore")

    allow_networks: str = Field(
        default="",
        description="Inner networks endpoints may reach besides public addresses, comma-separated, e.g. "
        "`10.0.0.0/8,127.0.0.0/8`; link-local and cloud metadata addresses only by a network inside them "
        "(`merlin dev` and the tests: loopback, `127.0.0.0/8,::1/128`).",
    )
    allow_private: bool = Field(
        default=False,
        description="Every inner network at once (`0.0.0.0/0,::/0`): still never link-local or metadata "
        "addresses.",
    )
    secret_keys: SecretStr = Field(
        default=SecretStr(""),
        description="Fernet keys, comma-separated: the first seals endpoint secrets in the settings topic, "
        "every one opens them; the admin API and the forwarder need them (`merlin dev`: kept in "
        "`var/endpoints.keys`).",
    )

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
