"""merlin's side of each comparison: `merlin forwarder --processes N`, N workers sharing the partitions."""

from __future__ import annotations

from merlin.local.service_processes import Service, Services


def merlin_forwarders(services: Services, n: int, **env: str) -> list[Service]:
    """A forwarder of ``n`` processes in the same consumer groups, under one parent."""
    return [services.forwarder(MERLIN_FORWARDER_PROCESSES=str(n), **env)]


def check_running(workers: list[Service]) -> None:
    """Raise, with its log's end, if a forwarder has exited."""
    for worker in workers:
        if worker.process.poll() is not None:
            raise RuntimeError(
                f"a forwarder exited ({worker.process.returncode}):\n{worker.output()[-3000:]}"
            )
