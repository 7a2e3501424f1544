"""The benchmark's outputs: one table on stdout, JSON and a PNG chart in bench/results/."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness import Memory, Row

RESULTS = Path(__file__).resolve().parent / "results"


def _number(value: float | None, digits: int | None = None) -> str:
    if value is None:
        return ""
    return f"{value:,.{(0 if abs(value) >= 100 else 2) if digits is None else digits}f}"


def table(rows: list[Row]) -> str:
    """A plain-text table of ``rows``."""
    header = ("scenario", "measure", "merlin", "unit", "limit", "ratio", "p50 ms", "p99 ms", "limit is")
    lines = [
        (r.scenario, r.measure, _number(r.merlin), r.unit, _number(r.limit),
         "" if r.ratio is None else f"{r.ratio:.0%}", _number(r.p50_ms, 2), _number(r.p99_ms, 2),
         r.limit_name or "")
        for r in rows
    ]  # fmt: skip
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines, strict=True)]
    out = ["  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True))
           for line in [header, *lines]]  # fmt: skip
    out.insert(1, "  ".join("-" * width for width in widths))
    memories = [r.memory for r in rows if r.memory is not None]
    return "\n".join(out) + (f"\n\n{memory_table(memories)}" if memories else "")


def memory_table(memories: list[Memory]) -> str:
    """Each process's resident memory over a soak, and its slope per event and per hour."""
    header = ("process", "fresh MB", "start MB", "half MB", "end MB", "KB/1,000 events", "MB/hour",
              "2nd half KB/1,000 events", "events")  # fmt: skip
    lines = [
        (m.process, _number(m.fresh_mb, 1), _number(m.start_mb, 1), _number(m.half_mb, 1),
         _number(m.end_mb, 1), _number(m.kb_per_1000_events, 2), _number(m.mb_per_hour, 2),
         _number(m.second_half_kb_per_1000_events, 2), _number(m.events, 0))
        for m in memories
    ]  # fmt: skip
    widths = [max(len(cell) for cell in column) for column in zip(header, *lines, strict=True)]
    out = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
           for line in [header, *lines]]  # fmt: skip
    out.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(out)


def save(rows: list[Row], runs: int, quick: bool, directory: Path = RESULTS) -> tuple[Path, Path | None]:
    """Write the JSON (and the chart, when matplotlib is there); their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"{'quick-' if quick else ''}{stamp}"
    document = {
        "when": stamp,
        "runs_per_figure": runs,
        "quick": quick,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "system": platform.platform(),
        },
        "rows": [{**asdict(row), "ratio": row.ratio} for row in rows],
    }
    data = directory / f"{name}.json"
    data.write_text(json.dumps(document, indent=2) + "\n")
    return data, chart(rows, directory / f"{name}.png")


def chart(rows: list[Row], path: Path) -> Path | None:
    """Throughput beside its limit, and latency percentiles, as a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    memories = [r.memory for r in rows if r.memory is not None]
    figure, panels = plt.subplots(1, 3 if memories else 2, figsize=(21 if memories else 14, 6))
    left, right = panels[0], panels[1]
    # Recovery times and memory are in the table, not on a rate axis.
    rates = [r for r in rows if r.unit != "s" and r.memory is None]
    labels = [f"{r.scenario}: {r.measure}" for r in rates]
    positions = range(len(rates))
    left.barh([p + 0.2 for p in positions], [r.merlin for r in rates], height=0.4, label="merlin")
    left.barh([p - 0.2 for p in positions], [r.limit or 0 for r in rates], height=0.4, label="limit")
    left.set_yticks(list(positions), labels, fontsize=8)
    left.set_xscale("log")
    left.set_xlabel("per second (log scale)")
    left.set_title("throughput beside the limit of this machine")
    left.legend()
    latency = [r for r in rows if r.p99_ms is not None]
    spots = range(len(latency))
    right.barh([p + 0.2 for p in spots], [r.p50_ms or 0 for r in latency], height=0.4, label="p50")
    right.barh([p - 0.2 for p in spots], [r.p99_ms or 0 for r in latency], height=0.4, label="p99")
    right.set_yticks(list(spots), [f"{r.scenario}: {r.measure}" for r in latency], fontsize=8)
    right.set_xscale("log")
    right.set_xlabel("milliseconds (log scale)")
    right.set_title("latency")
    right.legend()
    if memories:
        _memory_panel(panels[2], memories)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _memory_panel(axes: Any, memories: list[Memory]) -> None:
    """Each process's RSS over a soak; the warm-up is before minute 0."""
    for memory in memories:
        minutes = [minute for minute, _events, _mb in memory.samples]
        axes.plot(minutes, [mb for _minute, _events, mb in memory.samples], label=memory.process)
    axes.axvline(0, color="grey", linestyle=":", linewidth=1)
    axes.set_xlabel("minutes (warm-up before 0)")
    axes.set_ylabel("RSS, MB")
    axes.set_title("resident memory over the soak")
    axes.legend()
