"""Centrifugo v6, the peer of merlin's live rooms: built once from the Go module proxy, run by pid.

It runs with its memory engine and a config file written for each run: connections authenticate
with HS256 JWTs whose ``channels`` claim subscribes them on the server side (what a unidirectional
client needs), the HTTP API takes publications with its API key; nothing runs in an insecure mode.
Only the unidirectional SSE transport (``uni_sse``) is measured, so its WebSocket endpoint is off,
and so is its anonymous usage report.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import httpx
import jwt

from kernel.errors import InfrastructureError, ToolMissing
from merlin.local import processes
from merlin.local.service_processes import free_port

MODULE: Final = "github.com/centrifugal/centrifugo/v6"
VERSION: Final = "v6.9.1"
NAME: Final = f"Centrifugo {VERSION.removeprefix('v')}"
AUDIENCE: Final = "merlin-bench"
ISSUER: Final = "merlin-bench"
STREAM: Final = "/connection/uni_sse"
# The checkout's, as the benchmarks run from one (they are not shipped); a folder per version, as the
# Makefile's tools, so that another version is built anew.
_CACHE = Path(__file__).resolve().parents[2] / ".cache" / "go"
BINARY: Final = _CACHE / "bin" / f"centrifugo-{VERSION}" / "centrifugo"


def build_command(go: str = "go") -> list[str]:
    """``go install`` of the release, its version stamped as its own release build does."""
    stamp = f"-X={MODULE}/internal/build.Version={VERSION.removeprefix('v')}"
    return [go, "install", f"-ldflags={stamp}", f"{MODULE}@{VERSION}"]


def build_env(base: dict[str, str]) -> dict[str, str]:
    return {
        **base, "GOBIN": str(BINARY.parent), "GOPATH": str(_CACHE / "path"),
        "GOMODCACHE": str(_CACHE / "mod"), "GOFLAGS": "-modcacherw -trimpath", "CGO_ENABLED": "0",
    }  # fmt: skip


def centrifugo_binary() -> str:
    """Centrifugo, built with the Go toolchain into .cache/go when missing (about 2.5 min on 2 cores)."""
    if BINARY.exists():
        return str(BINARY)
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        raise ToolMissing(f"the live comparison needs Go to build {MODULE}@{VERSION} once")
    built = subprocess.run(
        build_command(go), env=build_env(dict(os.environ)), capture_output=True, text=True, check=False
    )
    if built.returncode != 0 or not BINARY.exists():
        raise ToolMissing(f"could not build {MODULE}@{VERSION}: {built.stderr[-1500:]}")
    return str(BINARY)


def config(port: int, token_secret: str, api_key: str) -> dict[str, Any]:
    """The config file's document for one run (Centrifugo v6's layout)."""
    return {
        "http_server": {"address": "127.0.0.1", "port": port},
        "log": {"level": "error"},
        "engine": {"type": "memory"},
        "client": {"token": {"hmac_secret_key": token_secret, "audience": AUDIENCE, "issuer": ISSUER}},
        # Errors as HTTP statuses, not a 200 with an error in its body: the sender counts what was refused.
        "http_api": {"key": api_key, "error_mode": "transport"},
        "uni_sse": {"enabled": True},
        "websocket": {"disabled": True},
        "health": {"enabled": True},
        "usage_stats": {"disabled": True},
    }


def connection_token(secret: str, subject: str, channels: Sequence[str], ttl_seconds: int = 86_400) -> str:
    """A connection JWT subscribing its holder to ``channels`` on the server side."""
    claims = {"sub": subject, "exp": int(time.time()) + ttl_seconds, "aud": AUDIENCE, "iss": ISSUER,
              "channels": list(channels)}  # fmt: skip
    return jwt.encode(claims, secret, algorithm="HS256")


def stream_path(token: str) -> str:
    """The unidirectional SSE endpoint, its connect request in the URL as a browser's EventSource sends it."""
    return f"{STREAM}?cf_connect={quote(json.dumps({'token': token}, separators=(',', ':')), safe='')}"


@dataclass(frozen=True)
class Centrifugo:
    url: str
    pid: int
    marker: str  # the config file's path, on its command line: guards against a reused pid
    log: Path
    token_secret: str
    api_key: str

    def tail(self) -> str:
        return processes.tail(self.log, 30)


@asynccontextmanager
async def running(
    binary: str, workdir: Path, name: str, token_secret: str, api_key: str, gomaxprocs: int
) -> AsyncIterator[Centrifugo]:
    """Centrifugo on a free port with ``gomaxprocs`` threads running Go, until the block ends."""
    port = free_port()
    path = workdir / f"{name}.json"
    path.write_text(json.dumps(config(port, token_secret, api_key), indent=2))
    log = workdir / f"{name}.log"
    env = {**os.environ, "GOMAXPROCS": str(gomaxprocs)}
    pid = processes.spawn_detached([binary, "--config", str(path)], log, workdir, env)
    server = Centrifugo(f"http://127.0.0.1:{port}", pid, str(path), log, token_secret, api_key)
    try:
        await _healthy(server)
        yield server
    finally:
        if processes.is_running(pid, server.marker):
            await asyncio.to_thread(processes.terminate, pid, server.marker, 10)
        processes.reap(pid)


async def _healthy(server: Centrifugo, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2) as client:
        while True:
            if not processes.is_running(server.pid, server.marker):
                raise InfrastructureError(f"Centrifugo exited while starting; its log ends:\n{server.tail()}")
            with suppress(httpx.TransportError):
                if (await client.get(f"{server.url}/health")).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise InfrastructureError(
                    f"Centrifugo did not answer within {timeout:.0f} s; its log ends:\n{server.tail()}"
                )
            await asyncio.sleep(0.1)
