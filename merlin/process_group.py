"""Several processes of one service under a parent: every core used, one Python interpreter each.

The parent starts each child, restarts one that exits (under the backoff
supervisor, so a child that keeps crashing is restarted less and less often,
and past the restart limit the parent exits non-zero), and on SIGTERM or SIGINT
passes SIGTERM on to every child, waits for them, and SIGKILLs what is left
after ``grace`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
import uvloop

from domain.errors import MerlinError
from forwarder.supervisor import BackoffPolicy, BackoffSupervisor, Hooks, SupervisorGaveUp

log = structlog.get_logger()

_PR_SET_PDEATHSIG = 1  # prctl(2)


class ChildExited(MerlinError):
    """A child process ended without being asked to."""


@dataclass
class Child:
    """One process of the group: what it runs, with what environment and inherited descriptors."""

    name: str
    argv: list[str]
    env: dict[str, str]
    pass_fds: tuple[int, ...] = ()
    process: asyncio.subprocess.Process | None = field(default=None, repr=False)


async def _run(child: Child, stop: asyncio.Event, grace: float) -> None:
    """Run ``child`` until it exits (raise ``ChildExited``) or ``stop`` is set (stop it, return)."""
    if stop.is_set():
        return
    process = child.process = await asyncio.create_subprocess_exec(
        *child.argv, env=child.env, pass_fds=child.pass_fds, stdin=asyncio.subprocess.DEVNULL,
        preexec_fn=_dies_with(os.getpid()),
    )  # fmt: skip
    log.info("process_started", process=child.name, pid=process.pid)
    exited = asyncio.ensure_future(process.wait())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:  # stopped, or cancelled (another child's supervisor gave up): no child outlives the parent
        stopping.cancel()
        if not exited.done():
            process.terminate()
            try:
                await asyncio.wait_for(asyncio.shield(exited), grace)
            except TimeoutError:
                log.warning("process_killed", process=child.name, pid=process.pid, after_s=grace)
                process.kill()
                await exited
        child.process = None
    if not stop.is_set():
        raise ChildExited(f"{child.name} (pid {process.pid}) exited with status {process.returncode}")


def _dies_with(parent: int) -> Callable[[], None]:
    """Run in the child before it starts: SIGTERM when ``parent`` dies, even of a SIGKILL (Linux)."""

    def set_up() -> None:
        with contextlib.suppress(OSError, AttributeError):  # not Linux: children outlive a killed parent
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the line above
            os.kill(os.getpid(), signal.SIGTERM)

    return set_up


async def _supervised(child: Child, stop: asyncio.Event, policy: BackoffPolicy, grace: float) -> None:
    def failed(name: str, exc: BaseException, delay: float) -> None:
        log.error("process_exited", process=name, error=str(exc), restart_in=round(delay, 3))

    supervisor = asyncio.create_task(
        BackoffSupervisor(
            child.name, lambda: _run(child, stop, grace), policy, Hooks(on_failure=failed)
        ).run()
    )
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({supervisor, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if not supervisor.done() and child.process is None:
        supervisor.cancel()  # backing off between restarts: nothing runs that needs stopping
    with contextlib.suppress(asyncio.CancelledError):
        await supervisor


def run_group(
    children: list[Child],
    policy: BackoffPolicy,
    grace: float = 30.0,
    serving: contextlib.AbstractAsyncContextManager[None] | None = None,
) -> None:
    """Run ``children`` until SIGTERM or SIGINT; raise ``SupervisorGaveUp`` past the restart limit.

    ``serving`` (e.g. the children's metrics listener) runs on the parent's loop meanwhile.
    """

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            async with serving or contextlib.nullcontext(), asyncio.TaskGroup() as group:
                for child in children:
                    group.create_task(_supervised(child, stop, policy, grace))
        except* SupervisorGaveUp as gave_up:
            stop.set()
            raise gave_up.exceptions[0] from None

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
