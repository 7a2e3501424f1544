"""The Kafka Connect worker's jars and its two plugins, fetched from Maven Central once into the cache.

Each pom under ``maven/`` names one folder: ``runtime`` is the worker's classpath, the
others are plugin directories. The folder for a set of poms is keyed by their content,
so a second run needs neither Maven nor the network.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from kernel.errors import InfrastructureError, ToolMissing
from merlin.local.settings import LocalSettings

MAVEN = Path(__file__).resolve().parent / "maven"
PLUGINS = ("debezium-jdbc", "camel-http")

# The worker's own copies are used. Debezium's jackson beside the worker's breaks its tasks at start
# ("BlackbirdModule not a subtype": the worker registers jackson-module-blackbird via ServiceLoader).
_DROPPED = {
    "debezium-jdbc": ("jackson-core-", "jackson-databind-", "jackson-annotations-"),
    "*": ("lz4-java-", "snappy-java-", "zstd-jni-"),
}


@dataclass(frozen=True)
class ConnectJars:
    """Where the fetched jars are: the worker's classpath and the plugin path."""

    home: Path

    @property
    def runtime(self) -> Path:
        return self.home / "runtime"

    @property
    def plugins(self) -> Path:
        return self.home / "plugins"


def _digest() -> str:
    hashed = hashlib.sha256(repr(sorted(_DROPPED.items())).encode())
    for name in ("runtime", *PLUGINS):
        hashed.update((MAVEN / name / "pom.xml").read_bytes())
    return hashed.hexdigest()[:12]


def fetch(settings: LocalSettings | None = None) -> ConnectJars:
    """The cached jars, resolved with Maven first if this set of poms has not been fetched yet."""
    home = (settings or LocalSettings()).cache_dir / "peers" / _digest()
    if (home / ".complete").exists():
        return ConnectJars(home)
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ToolMissing(
            "Maven (mvn) is needed once to fetch Kafka Connect and its plugins from Maven Central, "
            "and it is not on PATH. On Debian: apt-get install maven"
        )
    staging = home.with_name(f"{home.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)
    _copy(mvn, "runtime", staging / "runtime")
    for plugin in PLUGINS:
        folder = staging / "plugins" / plugin
        # The worker provides the Connect API, the Kafka clients and the logging binding.
        _copy(mvn, plugin, folder, "-DexcludeGroupIds=org.apache.kafka,org.slf4j")
        for jar in folder.glob("*.jar"):
            if jar.name.startswith((*_DROPPED.get(plugin, ()), *_DROPPED["*"])):
                jar.unlink()
    (staging / ".complete").write_text("")
    shutil.rmtree(home, ignore_errors=True)
    staging.rename(home)
    return ConnectJars(home)


def _copy(mvn: str, pom: str, into: Path, *options: str) -> None:
    command = [
        mvn, "-B", "-q", "-f", str(MAVEN / pom / "pom.xml"),
        "dependency:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={into}", *options,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise InfrastructureError(
            f"Maven could not fetch the jars of maven/{pom}/pom.xml:\n"
            + (result.stdout + result.stderr)[-3000:]
        )
