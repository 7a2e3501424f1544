"""HTTP load from wrk (Debian's package), a separate process so the load generator is not the bottleneck."""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from kernel.errors import ToolMissing

_REPORT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nWRK-JSON {"requests": %d, "duration_us": %d, "errors": %d, "non2xx": %d, '
    .. '"p50_us": %d, "p95_us": %d, "p99_us": %d}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
"""


@dataclass(frozen=True)
class LoadResult:
    requests_per_second: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int
    non2xx: int
    generator_cpu_seconds: float  # what the load generator itself cost

    def as_dict(self) -> dict[str, float]:
        return {key: round(float(value), 3) for key, value in self.__dict__.items()}


def wrk_binary() -> str:
    """wrk, installed from Debian's package when it is missing (as root)."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], env=env, capture_output=True, check=False)
        found = shutil.which("wrk")
    if not found:
        raise ToolMissing("the benchmarks need wrk: apt-get install wrk")
    return found


def run_wrk(url: str, script: str, connections: int, seconds: float, threads: int = 1) -> LoadResult:
    """Drive ``url`` with ``script`` (Lua: request generation) for ``seconds``."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(script + _REPORT)
    try:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        result = subprocess.run(
            [wrk_binary(), f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s",
             "--timeout", "10s", "-s", lua.name, url],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        Path(lua.name).unlink(missing_ok=True)
    line = next((ln for ln in result.stdout.splitlines() if ln.startswith("WRK-JSON ")), None)
    if result.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed: {result.stdout}\n{result.stderr}")
    report = json.loads(line.removeprefix("WRK-JSON "))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return LoadResult(
        requests_per_second=report["requests"] / (report["duration_us"] / 1e6),
        p50_ms=report["p50_us"] / 1000,
        p95_ms=report["p95_us"] / 1000,
        p99_ms=report["p99_us"] / 1000,
        errors=report["errors"],
        non2xx=report["non2xx"],
        generator_cpu_seconds=cpu,
    )


def _headers(headers: dict[str, str]) -> str:
    return "".join(f'wrk.headers["{name}"] = "{value}"\n' for name, value in headers.items())


def post_messages_script(rooms: int, body_bytes: int, headers: dict[str, str]) -> str:
    """Lua that POSTs messages with ``body_bytes``-character bodies round-robin over ``rooms`` rooms."""
    return f"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
{_headers(headers)}local body = '{{"sender_id":"bench","body":"' .. string.rep("x", {body_bytes}) .. '"}}'
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, "/v1/rooms/room-" .. (n % {rooms}) .. "/messages", nil, body)
end
"""


def get_paths_script(paths: list[str], headers: dict[str, str]) -> str:
    """Lua that GETs ``paths`` in turn."""
    listed = ",".join(f'"{path}"' for path in paths)
    return f"""
{_headers(headers)}local paths = {{{listed}}}
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", paths[(n % #paths) + 1])
end
"""
