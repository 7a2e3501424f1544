"""The `merlin` command loads a service only to run it: a forwarder's parent starts its children sooner."""

from __future__ import annotations

import subprocess
import sys

_HEAVY = ("forwarder.worker", "uvicorn", "fastapi", "sqlalchemy", "alembic", "write_api.app", "admin_api.app")


def _loaded_after(statement: str) -> set[str]:
    check = f"import sys; {statement}; print(' '.join(m for m in {_HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


def test_the_command_and_a_forwarders_parent_import_no_service() -> None:
    # What `merlin forwarder --processes N` loads before it starts its children.
    assert _loaded_after("import merlin.cli, merlin.services, merlin.process_group") == set()


def test_a_forwarder_process_imports_neither_the_apis_nor_alembic() -> None:
    loaded = _loaded_after("import merlin.cli, merlin.services, forwarder.worker")
    assert loaded == {"forwarder.worker", "sqlalchemy"}
