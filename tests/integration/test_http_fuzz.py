"""Schemathesis fuzzes both APIs from their own OpenAPI documents: no input may cause a 500."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from kernel.auth import SCOPES
from merlin.local.service_processes import Services

SCHEMATHESIS = str(Path(sys.executable).parent / "schemathesis")


@pytest.mark.parametrize("api", ["write", "read"])
async def test_no_generated_request_gets_a_server_error(sqlite_services: Services, api: str) -> None:
    if api == "write":
        service = await sqlite_services.write_api()
    else:
        sqlite_services.forwarder()
        service = await sqlite_services.read_api(MERLIN_READ_API_POSITION_WAIT_SECONDS="0.2")
    # Authenticated as a caller with every scope: the fuzzing reaches the routes, not the 401.
    token = sqlite_services.token(scopes=SCOPES)
    run = await asyncio.create_subprocess_exec(
        SCHEMATHESIS, "run", f"{service.url}/openapi.json", "--header", f"Authorization: Bearer {token}",
        "--checks", "not_a_server_error,status_code_conformance,content_type_conformance",
        "--max-examples", "40", "--generation-deterministic", "--no-color",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output = (await asyncio.wait_for(run.communicate(), 300))[0].decode()
    assert run.returncode == 0, output[-6000:]
    assert " passed" in output
