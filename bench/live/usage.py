"""A server's CPU time and resident memory from ``/proc``, over the process and its descendants.

merlin's read API with ``--workers N`` is a parent and N worker processes; Centrifugo is one process.
The processes live through a measurement, so the difference of two samples of the tree's CPU time
is what the server used in between.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")
_PROC = Path("/proc")


@dataclass(frozen=True)
class Stat:
    pid: int
    ppid: int
    cpu_ticks: int  # utime + stime


def parse_stat(text: str) -> Stat:
    """``/proc/<pid>/stat``: a command may hold spaces and parentheses, so fields count from the last ')'."""
    pid = int(text.split(" ", 1)[0])
    fields = text.rsplit(")", 1)[1].split()
    # After the command: state(0) ppid(1) ... utime(11) stime(12), as proc(5) numbers them 3, 4, 14, 15.
    return Stat(pid, int(fields[1]), int(fields[11]) + int(fields[12]))


def parse_rss_kb(status: str) -> int:
    """``VmRSS`` of ``/proc/<pid>/status``, in KiB (0 for a process without memory of its own)."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def descendants(root: int, stats: list[Stat]) -> list[int]:
    """``root`` and every process below it."""
    children: dict[int, list[int]] = {}
    for stat in stats:
        children.setdefault(stat.ppid, []).append(stat.pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _stats() -> list[Stat]:
    stats = []
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            try:
                stats.append(parse_stat((entry / "stat").read_text()))
            except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
                continue  # ended while being listed
    return stats


@dataclass(frozen=True)
class Usage:
    cpu_s: float
    rss_mb: float  # MiB, as ``ps`` counts


def usage(root: int) -> Usage:
    """The CPU time and resident memory of ``root`` and its descendants now."""
    stats = _stats()
    ticks = {stat.pid: stat.cpu_ticks for stat in stats}
    cpu, rss = 0, 0
    for pid in descendants(root, stats):
        try:
            rss += parse_rss_kb((_PROC / str(pid) / "status").read_text())
        except FileNotFoundError:
            continue
        cpu += ticks.get(pid, 0)
    return Usage(cpu / _TICKS, rss / 1024)
