"""The settings of every API's HTTP edge (``kernel.http.edge``), apart from it: every ``merlin`` command
reads them to know each setting's name, and the edge imports uvicorn and starlette."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class EdgeSettings(BaseSettings):
    """Limits of every API's HTTP listener (``MERLIN_HTTP_*``)."""

    model_config = SettingsConfigDict(env_prefix="MERLIN_HTTP_", extra="ignore")

    max_head_bytes: int = Field(
        default=16 * 1024,
        ge=1024,
        description="A bigger request head (request line and headers) is `431`, counted as it arrives.",
    )
    max_headers: int = Field(default=100, ge=8, description="More headers than this in a request is `431`.")
    head_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="A request head slower than this to arrive is `408` (from the connection, or from the "
        "first byte of a later request); a connection that sent nothing is closed.",
    )
    body_timeout_seconds: float = Field(
        default=30.0, gt=0, description="A request body slower than this to arrive is `408`."
    )
    max_connections: int = Field(
        default=2048,
        ge=1,
        description="Open connections per API process; past it, `503` with `Retry-After` and close, at once.",
    )
    retry_after_seconds: int = Field(default=1, ge=1, description="The `Retry-After` of that `503`.")
