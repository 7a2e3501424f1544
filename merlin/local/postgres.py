"""A PostgreSQL cluster from Debian's packages, listening on 127.0.0.1 for merlin.

Installed with apt when missing. PostgreSQL refuses to run as root, so when
merlin runs as root the cluster belongs to the ``postgres`` system user.
Loopback connections are trusted: this cluster is for development and tests.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from kernel.errors import InfrastructureError, ToolMissing
from merlin.local import processes
from merlin.local.settings import LocalSettings

_HOST = "127.0.0.1"
_DEBIAN_BIN = Path("/usr/lib/postgresql")


@dataclass(frozen=True)
class PostgresStatus:
    running: bool
    port: int
    user: str
    managed: bool

    def url(self, database: str, driver: str = "postgresql+asyncpg") -> str:
        """A SQLAlchemy URL for ``database`` on this server."""
        return f"{driver}://{self.user}@{_HOST}:{self.port}/{database}"

    def describe(self) -> str:
        """One line for an operator."""
        if not self.running:
            return f"postgres: not running (would listen on {_HOST}:{self.port})"
        owner = "" if self.managed else ", not started by this merlin"
        return f"postgres: running at {_HOST}:{self.port} as user {self.user}{owner}"


class LocalPostgres:
    """Install, start, stop and inspect one local PostgreSQL cluster."""

    def __init__(self, settings: LocalSettings | None = None, port: int | None = None) -> None:
        self.settings = settings or LocalSettings()
        self.port = port or self.settings.postgres_port
        self.user = self.settings.postgres_user
        self.as_root = os.geteuid() == 0
        if self.settings.postgres_data_dir is not None:
            base = self.settings.postgres_data_dir
        elif self.as_root:
            base = Path("/var/lib/postgresql/merlin") / str(self.port)
        else:
            base = self.settings.var_dir / "postgres" / str(self.port)
        self.base_dir = base
        self.data_dir = base / "data"
        self.log_file = base / "postgres.log"

    def status(self) -> PostgresStatus:
        """Whether a server accepts merlin's user on the port, and whether it is ours."""
        managed = (self.data_dir / "postmaster.pid").exists() and self._ctl_status()
        running = processes.port_open(_HOST, self.port) and asyncio.run(self._answers())
        return PostgresStatus(running, self.port, self.user, managed and running)

    def start(self) -> PostgresStatus:
        """Install if needed, start unless running, create merlin's databases."""
        current = self.status()
        if not current.running:
            if processes.port_open(_HOST, self.port):
                raise InfrastructureError(
                    f"port {self.port} is taken by a server that does not accept user "
                    f"{self.user!r}; set MERLIN_LOCAL_POSTGRES_PORT to another port"
                )
            self._ensure_cluster()
            self._run(
                self._bin("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file),
                "-w", "-t", "60", "start",
            )  # fmt: skip
            current = self.status()
            if not current.running:
                raise InfrastructureError(
                    f"PostgreSQL did not start; the end of {self.log_file}:\n" + processes.tail(self.log_file)
                )
        asyncio.run(self._create_databases())
        return current

    def stop(self) -> bool:
        """Stop the cluster this merlin runs; False when it was not running."""
        if not (self.data_dir / "postmaster.pid").exists() or not self._ctl_status():
            return False
        self._run(self._bin("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop")
        return True

    def _ensure_cluster(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        initdb = self._bin("initdb")
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if self.as_root:
            shutil.chown(self.base_dir, "postgres", "postgres")
        self._run(
            initdb, "-D", str(self.data_dir), "-U", self.user, "--auth=trust",
            "-E", "UTF8", "--locale=C.UTF-8", "--no-instructions",
        )  # fmt: skip
        settings = {
            "port": str(self.port),
            "listen_addresses": f"'{_HOST}'",
            "unix_socket_directories": f"'{self.base_dir}'",
            "max_connections": "200",
            # A development cluster: fast commits, no durability across a power cut.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# merlin local cluster\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def _bin(self, name: str) -> str:
        found = _find_binary(name)
        if found is None:
            _install_postgresql()
            found = _find_binary(name)
        if found is None:
            raise ToolMissing(f"PostgreSQL's {name} was not found even after installing postgresql")
        return found

    def _ctl_status(self) -> bool:
        pg_ctl = _find_binary("pg_ctl")
        if pg_ctl is None:
            return False
        result = subprocess.run(
            self._as_owner([pg_ctl, "-D", str(self.data_dir), "status"]),
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        return result.returncode == 0

    def _as_owner(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if self.as_root else argv

    def _run(self, *argv: str) -> None:
        result = subprocess.run(
            self._as_owner(list(argv)), capture_output=True, text=True, check=False, cwd="/"
        )
        if result.returncode != 0:
            raise InfrastructureError(
                f"{Path(argv[0]).name} failed ({result.returncode}):\n"
                + (result.stdout + result.stderr)[-3000:]
                + ("\n" + processes.tail(self.log_file) if self.log_file.exists() else "")
            )

    async def _answers(self) -> bool:
        try:
            connection = await asyncpg.connect(
                host=_HOST, port=self.port, user=self.user, database="postgres", timeout=3
            )
        except (TimeoutError, OSError, asyncpg.PostgresError):
            return False
        await connection.close()
        return True

    async def _create_databases(self) -> None:
        connection = await asyncpg.connect(
            host=_HOST, port=self.port, user=self.user, database="postgres", timeout=10
        )
        try:
            for name in self.settings.postgres_databases:
                exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
                if not exists:
                    await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()


def _find_binary(name: str) -> str | None:
    versions = sorted(
        (path for path in _DEBIAN_BIN.glob(f"*/bin/{name}") if path.parent.parent.name.isdigit()),
        key=lambda path: int(path.parent.parent.name),
    )
    if versions:
        return str(versions[-1])
    return shutil.which(name)


def _install_postgresql() -> None:
    """Install Debian's postgresql package (as root, or through sudo)."""
    apt = shutil.which("apt-get")
    if apt is None:
        raise ToolMissing("PostgreSQL is not installed and this is not a Debian-like system (no apt-get)")
    prefix: list[str] = []
    if os.geteuid() != 0:
        sudo = shutil.which("sudo")
        if sudo is None:
            raise ToolMissing("PostgreSQL is not installed; run: sudo apt-get install postgresql")
        prefix = [sudo, "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*prefix, apt, "install", "-y", "-q", "--no-install-recommends", "postgresql"]
    if subprocess.run(install, env=env, capture_output=True, check=False).returncode == 0:
        return
    subprocess.run([*prefix, apt, "update", "-q"], env=env, capture_output=True, check=False)
    result = subprocess.run(install, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ToolMissing("installing Debian's postgresql failed:\n" + result.stderr[-3000:])
