"""The benchmark's outputs: one table on stdout, JSON and a PNG chart.

A run writes its files into ``var/bench/`` (under the local state folder, which git ignores): most
runs are tries, and a committed result is one the README cites. ``--record`` writes them into
``bench/results/`` instead, to be committed. ``--render`` draws a saved run's chart again from its
JSON, in place, without running anything.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.harness import PEERS, Memory, Row
from merlin.local.settings import LocalSettings

RECORDED = Path(__file__).resolve().parent / "results"


def _number(value: float | None, digits: int | None = None) -> str:
    if value is None:
        return ""
    return f"{value:,.{(0 if abs(value) >= 100 else 2) if digits is None else digits}f}"


def table(rows: list[Row]) -> str:
    """A plain-text table of ``rows``; in the peers comparison, the figure beside merlin's is its peer's."""
    beside = "peer" if rows and all(r.scenario == PEERS for r in rows) else "limit"
    header = ("scenario", "measure", "merlin", "unit", beside, "ratio", "p50 ms", "p99 ms",
              f"{beside} is")  # fmt: skip
    lines = [
        (r.scenario, r.measure, _number(r.merlin), r.unit, _number(r.limit),
         "" if r.ratio is None else f"{r.ratio:.0%}", _number(r.p50_ms, 2), _number(r.p99_ms, 2),
         f"peer: {r.limit_name}" if r.peer and beside == "limit" else r.limit_name or "")
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


def destination(record: bool) -> Path:
    """Where a run's files go: ``bench/results/`` when recorded, else ``bench/`` in the local state folder."""
    return RECORDED if record else LocalSettings().var_dir / "bench"


def save(rows: list[Row], runs: int, quick: bool, directory: Path) -> tuple[Path, Path | None]:
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
    return data, chart(rows, directory / f"{name}.png", caption(document))


def load(path: Path) -> tuple[list[Row], dict[str, Any]]:
    """The rows of a saved run, and its whole document; files from before a field existed load too."""
    document: dict[str, Any] = json.loads(path.read_text())
    return [_row(item) for item in document["rows"]], document


def _row(item: dict[str, Any]) -> Row:
    fields = {key: value for key, value in item.items() if key not in ("ratio", "memory")}
    memory = item.get("memory")
    if memory is not None:
        samples = [(minute, events, mb) for minute, events, mb in memory.get("samples", [])]
        fields["memory"] = Memory(**{**memory, "samples": samples})
    return Row(**fields)


def caption(document: dict[str, Any]) -> str:
    """The run's when and how, for the chart's title."""
    runs = document.get("runs_per_figure", 1)
    cpus = document.get("machine", {}).get("cpus")
    how = [
        "quick run" if document.get("quick") else "",
        f"median of {runs} runs" if runs > 1 else "one run",
        f"{cpus} CPUs" if cpus else "",
    ]
    return f" — {document.get('when', '')}: " + ", ".join(part for part in how if part)


def render(data: Path) -> Path:
    """Draw the chart of the run saved in ``data`` again, beside it (same name, .png); its path."""
    rows, document = load(data)
    picture = chart(rows, data.with_suffix(".png"), caption(document))
    if picture is None:
        raise RuntimeError("matplotlib is not installed: `pip install -e '.[dev]'`")
    return picture


def chart(rows: list[Row], path: Path, title: str = "") -> Path | None:
    """The run's chart (bench.charts) as a PNG at ``path``; None without matplotlib."""
    try:
        from bench.charts import figure
    except ImportError:
        return None
    figure(rows, title).savefig(path, dpi=100)
    return path
