"""``merlin rebuild``: a rebuild of the read store (``forwarder.rebuild``) as a person runs it, with
its progress on the terminal.

A terminal gets a bar redrawn in place; a log (CI has no terminal) gets a plain line
every few seconds. The bar is drawn here in a few lines rather than with a library
such as ``rich``: its lines are the same in a terminal and a log, and the command
stays one dependency lighter.
"""

from __future__ import annotations

import asyncio
import io
import math
import os
import shutil
import signal
import sys
import time
from typing import TextIO

import orjson
from sqlalchemy.engine import make_url

from domain.errors import MerlinError
from forwarder.rebuild import Plan, Progress, Result, Target, rebuild
from forwarder.settings import ForwarderSettings
from kernel.logs import configure_logging
from kernel.settings import KafkaSettings
from read_store.settings import ReadStoreSettings


def duration(seconds: float | None) -> str:
    """``seconds`` as H:MM:SS; ``--:--:--`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "--:--:--"
    whole = max(0, math.ceil(seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def describe(progress: Progress) -> str:
    """One line: events done of the total, percent, pace and ETA (or, past the end, what followed)."""
    if progress.caught_up and progress.beyond:
        return (
            f"caught up ({progress.total:,} events), following: {progress.beyond:,} more,"
            f" {progress.rate:,.0f} events/s"
        )
    return (
        f"{progress.done:,}/{progress.total:,} events ({progress.fraction:.1%}),"
        f" {progress.rate:,.0f} events/s, ETA {duration(progress.eta)}"
    )


def bar(progress: Progress, width: int) -> str:
    """``describe`` behind a bar of ``width`` characters in all."""
    text = describe(progress)
    room = width - len(text) - 3  # "[", "] "
    if room < 10:
        return text[:width]
    filled = round(progress.fraction * room)
    return f"[{'#' * filled}{'.' * (room - filled)}] {text}"


class ProgressReport:
    """Prints progress on ``stream``: a bar redrawn in place on a terminal, plain lines otherwise.

    A terminal gets about two redraws a second; a log (CI has no terminal) gets a line every
    ``every`` seconds, so it tells the story without drowning in it.
    """

    def __init__(self, stream: TextIO, every: float = 5.0) -> None:
        self.stream = stream
        self.terminal = stream.isatty()
        self.every = 0.5 if self.terminal else every
        self._shown = -math.inf
        self._drawn = False

    def __call__(self, progress: Progress, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._shown < self.every:
            return
        self._shown = now
        if self.terminal:
            self.stream.write(f"\r\x1b[K{bar(progress, self._width() - 1)}" + ("\n" if final else ""))
            self._drawn = not final
        else:
            self.stream.write(f"rebuild: {describe(progress)}\n")
        self.stream.flush()

    def _width(self) -> int:
        # The width of the terminal the bar is drawn on, whatever stdout is (say, a file of JSON).
        try:
            return os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError, io.UnsupportedOperation):
            return shutil.get_terminal_size().columns

    def end(self) -> None:
        """Leave the bar's line, so what is printed next starts a line of its own."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def say(self, text: str) -> None:
        """A message of its own, on lines of its own (the bar is redrawn below it)."""
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self._drawn = False
            self._shown = -math.inf
        self.stream.write(text if text.endswith("\n") else f"{text}\n")
        self.stream.flush()


def switch_over(target: Target) -> str:
    """How to move the services onto the rebuilt store."""
    schema = (
        f"MERLIN_READ_STORE_DB_SCHEMA={target.schema}"
        if target.schema
        else "MERLIN_READ_STORE_DB_SCHEMA unset"
    )
    password = " (with the password given to --to)" if make_url(target.url).password else ""
    return "\n".join(
        (
            f"To switch over, restart the read API and every forwarder on the new store{password}:",
            f"    MERLIN_READ_STORE_URL={target.shown()}",
            f"    {schema}",
            "The forwarder's projection goes on from the new store's own positions, so nothing is missed",
            "or applied twice; endpoints keep their own consumer groups, so nothing is delivered again.",
            "With --follow, stop the rebuild once they run (both may project into the store meanwhile:",
            "its positions are locked per batch). Nothing reads the old store after that.",
        )
    )


def run(
    to: str,
    schema: str | None = None,
    *,
    follow: bool = False,
    as_json: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """``merlin rebuild``: 0 once caught up, 130 when stopped before (run it again to continue)."""
    out, err = out or sys.stdout, err or sys.stderr
    # Warnings and errors only (a record the new store refuses, a broker lost): the bar is the news.
    configure_logging("rebuild", "WARNING")
    target = Target(to, schema or None)
    if target.is_store(ReadStoreSettings()):
        raise MerlinError(
            "--to names the services' own read store (MERLIN_READ_STORE_URL): rebuild into a new one"
        )
    kafka, settings = KafkaSettings(), ForwarderSettings()
    report = ProgressReport(err)
    # The switch-over notice is what a person reads: on stdout, unless stdout carries the JSON.
    notices = err if as_json else out

    def planned(plan: Plan) -> None:
        resumed = " (resuming)" if any(start > 0 for start in plan.starts.values()) else ""
        report.say(f"rebuild: {plan.total:,} events of {kafka.events_topic} into {target}{resumed}")

    def caught_up(progress: Progress) -> None:
        report(progress, final=True)
        report.say(f"rebuild: caught up in {progress.seconds:.1f} s")
        notices.write(switch_over(target) + "\n")
        notices.flush()

    async def main() -> Result:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def stopping(signum: int) -> None:
            stop.set()
            # A second signal is not asked to wait: the store's positions make a hard stop safe.
            loop.remove_signal_handler(signum)

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stopping, signum)
        return await rebuild(
            target, kafka, settings, follow=follow, stop=stop, report=report, caught_up=caught_up,
            planned=planned,
        )  # fmt: skip

    try:
        result = asyncio.run(main())
    finally:
        report.end()
    if not result.caught_up:
        report.say("rebuild: stopped before catching up; run the same command again to continue")
    elif follow:
        report.say(f"rebuild: stopped following after {result.events:,} events")
    summary = {
        "target": target.shown(),
        "schema": target.schema,
        "events": result.events,
        "seconds": round(result.seconds, 3),
        "rate": round(result.rate, 1),
        "caught_up": result.caught_up,
        "refused": result.refused,
        "malformed": result.malformed,
    }
    if as_json:
        out.write(orjson.dumps(summary).decode() + "\n")
    else:
        out.write(
            f"rebuild: {result.events:,} events in {result.seconds:.1f} s ({result.rate:,.0f} events/s);"
            f" {result.refused} refused by the new store, {result.malformed} not events\n"
        )
    out.flush()
    return 0 if result.caught_up else 130
