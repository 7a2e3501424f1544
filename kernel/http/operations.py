"""``/healthz``, ``/readyz`` and ``/metrics``, the same on every API.

``/metrics`` here needs an admin token, as every route but health does; Prometheus
scrapes the API's metrics listener instead (``kernel.operations_listener``).
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from fastapi import FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from pydantic import BaseModel, Field
from starlette.responses import Response

from kernel.http.problems import problem_responses
from kernel.http.responses import OrjsonResponse, problem

ReadinessCheck = Callable[[], Awaitable[dict[str, bool]]]


@dataclass(frozen=True)
class Operations:
    """An API's metrics and readiness, for its metrics listener (``kernel.operations_listener``)."""

    registry: CollectorRegistry
    readiness: ReadinessCheck


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready"]
    checks: dict[str, bool] = Field(description="Each dependency, and whether it answers (all do).")


def add_operations_routes(
    app: FastAPI, registry: CollectorRegistry, readiness: ReadinessCheck, service: str
) -> None:
    """Mount the liveness, readiness and metrics routes on ``app``, ``service``'s API.

    Their operation ids name the service: a client of several APIs tells their health apart.
    """
    named = "".join(part.title() for part in service.split("_"))

    @app.get(
        "/healthz",
        tags=["operations"],
        summary="The process is alive",
        operation_id=f"get{named}Health",
        response_model=Health,
    )
    async def healthz() -> Response:
        return OrjsonResponse({"status": "ok"})

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="Every dependency answers",
        operation_id=f"get{named}Readiness",
        response_model=Readiness,
        responses=problem_responses("not-ready"),
    )
    async def readyz() -> Response:
        checks = await readiness()
        if all(checks.values()):
            return OrjsonResponse({"status": "ready", "checks": checks})
        failing = ", ".join(name for name, ok in checks.items() if not ok)
        return problem(
            503, "not-ready", "Not ready.", f"not answering: {failing}", checks=checks,
            headers={"Retry-After": "1"},
        )  # fmt: skip

    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:  # one of several worker processes: answer for all
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
