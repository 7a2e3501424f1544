"""Open-loop HTTP load from vegeta: requests leave at a fixed rate, however slowly the server answers.

wrk (closed loop) finds the peak; vegeta measures latency at a chosen rate, which
is what a user sees below the peak. vegeta is built once from the Go module proxy
into ``.cache/go`` (Debian has no wrk2 or vegeta package).
"""

from __future__ import annotations

import base64
import os
import re
import resource
import shutil
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson
import structlog

from kernel.errors import ToolMissing

VEGETA_MODULE = "github.com/tsenart/vegeta/v12@v12.13.0"
# The checkout's, as the benchmarks run from one (they are not shipped).
_CACHE = Path(__file__).resolve().parents[1] / ".cache" / "go"
log = structlog.get_logger()
_REQUEST = re.compile(r'^\w+ "[^"]*": ')  # vegeta's prefix naming the method and URL


@dataclass(frozen=True)
class Sent:
    """One request of an attack: when it left, how long its answer took, what came back."""

    sent_at: float  # Unix time, seconds
    latency_s: float
    status: int
    body: bytes
    error: str = ""  # vegeta's words when there was no answer (status 0)


@dataclass(frozen=True)
class Attack:
    results: list[Sent]
    generator_cpu_seconds: float


def vegeta_binary() -> str:
    """vegeta, built with the Go toolchain into .cache/go when it is missing."""
    binary = _CACHE / "bin" / "vegeta"
    if binary.exists():
        return str(binary)
    found = shutil.which("vegeta")
    if found:
        return found
    go = shutil.which("go") or ("/usr/local/go/bin/go" if Path("/usr/local/go/bin/go").exists() else None)
    if go is None:
        raise ToolMissing("the open-loop benchmarks need vegeta (or Go to build it): apt-get install golang")
    env = {
        **os.environ, "GOBIN": str(binary.parent), "GOPATH": str(_CACHE / "path"),
        "GOMODCACHE": str(_CACHE / "mod"), "GOFLAGS": "-modcacherw",
    }  # fmt: skip
    built = subprocess.run(
        [go, "install", VEGETA_MODULE], env=env, capture_output=True, text=True, check=False
    )
    if built.returncode != 0 or not binary.exists():
        raise ToolMissing(f"could not build vegeta ({VEGETA_MODULE}): {built.stderr[-1000:]}")
    return str(binary)


def attack(
    url: str, paths: list[str], body: bytes, rate: int, seconds: float, headers: dict[str, str]
) -> Attack:
    """POST ``body`` with ``headers`` to ``paths`` in turn at ``rate`` requests/s for ``seconds``."""
    binary = vegeta_binary()
    with tempfile.TemporaryDirectory(prefix="merlin-vegeta-") as folder:
        work = Path(folder)
        (work / "body.json").write_bytes(body)
        extra = "".join(f"{name}: {value}\n" for name, value in headers.items())
        targets = "\n\n".join(
            f"POST {url}{path}\nContent-Type: application/json\n{extra}@{work / 'body.json'}"
            for path in paths
        )
        (work / "targets.txt").write_text(targets + "\n")
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        run = subprocess.run(
            [binary, "attack", f"-rate={rate}/s", f"-duration={seconds:g}s", "-timeout=10s",
             f"-targets={work / 'targets.txt'}", f"-output={work / 'results.bin'}"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if run.returncode != 0:
            raise RuntimeError(f"vegeta attack failed: {run.stderr[-2000:]}")
        encoded = subprocess.run(
            [binary, "encode", "--to=json", str(work / "results.bin")],
            capture_output=True,
            check=True,
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    results = [_sent(orjson.loads(line)) for line in encoded.stdout.splitlines() if line.strip()]
    _report_failures(results)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Attack(results, cpu)


def _sent(result: dict[str, object]) -> Sent:
    sent_at = datetime.fromisoformat(str(result["timestamp"])).timestamp()
    body = base64.b64decode(str(result.get("body") or ""))
    latency, status, error = (
        int(str(result["latency"])) / 1e9,
        int(str(result["code"])),
        str(result.get("error") or ""),
    )
    return Sent(sent_at, latency, status, body, error)


def _report_failures(results: list[Sent]) -> None:
    failed = Counter(
        _REQUEST.sub("", sent.error) or f"HTTP {sent.status}"
        for sent in results
        if not 200 <= sent.status < 300
    )
    if failed:
        log.warning("requests_failed", failures=dict(failed.most_common(5)), of=len(results))
