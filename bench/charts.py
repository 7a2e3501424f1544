"""A run's chart, built as a matplotlib Figure from its rows (``bench.report`` saves it as a PNG).

Two kinds of run, two kinds of chart:

- the scenarios (``python -m bench``): for each scenario, merlin's rate as a bar inside a dashed
  outline of what it is measured against in the same run (a limit of the machine, or the offered
  rate), named under the row, with the ratio printed; durations the same way; p50 and p99 latency;
  the soak's memory;
- the comparison with Kafka Connect and Centrifugo (``python -m bench --peers``): merlin and each peer
  side by side on a linear axis, each peer's figure also printed as a share of merlin's, the time
  each took to write its first event, and for live rooms both p99s. The peers are named, never
  called limits: they are other software. A scenario's row beside a peer (``Row.peer``: the live
  scenario's, beside Centrifugo) is drawn the same way, in a panel of its own.

A panel is drawn only when the run has data for it. matplotlib's object API with its Agg canvas
draws without pyplot's global state, so the tests can build and inspect a Figure directly.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from bench.harness import PEERS, Memory, Row
from bench.live.accounting import PER_CORE

MERLIN = "#1f77b4"
PEER_COLOURS = ("#ff7f0e", "#2ca02c", "#9467bd", "#8c564b")
# What merlin is measured against: a dashed outline, not a second bar, so that it reads as the
# edge merlin's bar could reach rather than as another contender.
LIMIT_STYLE: dict[str, Any] = {"fill": False, "edgecolor": "black", "linestyle": "--", "linewidth": 1.0}
LIMIT_LABEL = "its limit (or the offered rate), measured in the same run: named under each row"
LATENCY_NOT_MEASURED = (
    "p50/p99 latency is not measured in this comparison: each throughput runs from the start to the "
    "last event written; the right-hand panel is each side's time to its first."
)
LATENCY_LIVE_ONLY = (
    "p50/p99 latency is measured for live rooms only (a message's POST sent → each subscriber's "
    "receipt); each sink's throughput runs from the start to the last event written, and its panel "
    "of firsts is each side's time to its first."
)
# What N is, by the unit of the rows that share a panel; the sinks' otherwise.
_N_MEANS = {PER_CORE: "N: merlin's read API --workers; Centrifugo's GOMAXPROCS"}
_N_SINKS = "N: merlin's forwarder processes, the connector's tasks.max"

_GROUPED = re.compile(r"^(?P<work>.*), N = (?P<n>\d+)$")
# The counts of what went wrong that a peers row carries (bench.peers.comparison), as worded here.
_PROBLEMS = {"inversions": "order inversions", "duplicates": "duplicates", "refused": "refused",
             "missing": "deliveries missing", "repeated": "repeated or out of order"}  # fmt: skip
# The time to the first event written, by the key a peers row's extra carries it under.
_FIRSTS = {"first_row_s": "first row", "first_s": "first delivery"}


def figure(rows: list[Row], caption: str = "") -> Figure:
    """The chart of one run's ``rows``: the peers comparison's, or the scenarios'."""
    peers = [row for row in rows if row.scenario == PEERS]
    if peers and len(peers) != len(rows):
        raise ValueError("a run is either the peers comparison or the scenarios, not both")
    built = _peers_figure(rows, caption) if peers else _scenarios_figure(rows, caption)
    FigureCanvasAgg(built)
    return built


def peer_name(limit_name: str) -> str:
    """The peer a peers row names: 'Connect 4.3.1 + Debezium JDBC sink 3.6.0, tasks.max=1' -> its sink."""
    return limit_name.split(", tasks.max", 1)[0].split(" + ", 1)[-1]


def _peer_of(row: Row) -> str:
    """The peer of a row: named by the row, or (rows from before ``Row.peer``) by its limit's name."""
    return row.peer or peer_name(row.limit_name or "peer")


def _peer_p99(row: Row) -> float | None:
    return (row.extra or {}).get("peer_p99_ms") if row.p99_ms is not None else None


def _wrap(text: str, width: int = 44) -> str:
    return "\n".join(textwrap.wrap(text, width)) or text


def _grouped(rows: list[Row]) -> dict[str, list[tuple[str, Row]]]:
    """Rows by the work they measure; each with its 'N = k'."""
    works: dict[str, list[tuple[str, Row]]] = {}
    for row in rows:
        match = _GROUPED.match(row.measure)
        work, n = (match["work"], f"N = {match['n']}") if match else (row.measure, "")
        works.setdefault(work, []).append((n, row))
    return works


def _plain(axes: Axes, axis: str = "x") -> None:
    """Tick labels as plain figures with thousands separators, not 10^k."""
    formatter = FuncFormatter(lambda value, _: f"{value:,.0f}" if abs(value) >= 10 else f"{value:g}")
    (axes.xaxis if axis == "x" else axes.yaxis).set_major_formatter(formatter)


# The peers comparison.


def _peers_figure(rows: list[Row], caption: str) -> Figure:
    works = _grouped(rows)
    firsts = [row for row in rows if _first(row) is not None]
    p99s = [row for row in rows if _peer_p99(row) is not None]
    count = len(works) + (1 if firsts else 0) + (1 if p99s else 0)
    chart = Figure(figsize=(6.2 * count, 6.2), layout="constrained")
    panels = list(chart.subplots(1, count, squeeze=False)[0])
    colours: dict[str, str] = {}
    for axes, (work, group) in zip(panels, works.items(), strict=False):
        _peer_panel(axes, work, group, colours)
    if firsts:
        _first_panel(panels[len(works)], firsts, colours)
    if p99s:
        _p99_panel(panels[-1], p99s, colours)
    chart.suptitle(_peers_title(rows) + caption)
    unmeasured = [row for row in rows if row.p99_ms is None]
    if unmeasured:
        note = LATENCY_LIVE_ONLY if p99s else LATENCY_NOT_MEASURED
        chart.supxlabel(note, fontsize=8, color="dimgray")
    return chart


def _peers_title(rows: list[Row]) -> str:
    sinks = [row for row in rows if row.limit_name and " + " in row.limit_name]
    platforms = sorted({(row.limit_name or "").split(" + ", 1)[0] for row in sinks})
    on = f" on {', '.join(platforms)}" if platforms else ""
    parts = []
    if sinks:
        parts.append(f"merlin beside Kafka Connect sinks{on}, same broker, events and machine")
    live = sorted({row.peer for row in rows if row.peer is not None})
    if live:
        beside = f"live rooms beside {', '.join(live)}, same messages, subscribers and machine"
        parts.append(beside if sinks else f"merlin's {beside}")
    return "; ".join(parts) or "merlin beside its peers"


def _colour(colours: dict[str, str], name: str) -> str:
    return colours.setdefault(name, PEER_COLOURS[len(colours) % len(PEER_COLOURS)])


def _peer_panel(axes: Axes, work: str, group: list[tuple[str, Row]], colours: dict[str, str]) -> None:
    """merlin's bar and its peer's for each N, on a linear axis from 0, each figure printed."""
    width = 0.38
    named: set[str] = set()
    for x, (_n, row) in enumerate(group):
        bar = axes.bar(x - width / 2, row.merlin, width, color=MERLIN, label="merlin" if x == 0 else "_")
        axes.bar_label(bar, [f"{row.merlin:,.0f}"], padding=2, fontsize=8)
        if row.limit is None or row.limit_name is None:
            continue
        name = _peer_of(row)
        peer = axes.bar(
            x + width / 2, row.limit, width, color=_colour(colours, name),
            label=name if name not in named else "_",
        )  # fmt: skip
        named.add(name)
        share = f"{row.limit:,.0f}" + (f"\n{row.limit / row.merlin:.0%} of merlin" if row.merlin else "")
        axes.bar_label(peer, [share], padding=2, fontsize=8)
    axes.set_xticks(range(len(group)), [_tick(n, row) for n, row in group], fontsize=8)
    axes.set_xlabel(_N_MEANS.get(group[0][1].unit, _N_SINKS), fontsize=8)
    axes.set_ylabel(group[0][1].unit)
    axes.set_yscale("linear")
    top = max(max(row.merlin, row.limit or 0) for _n, row in group)
    axes.set_ylim(0, top * 1.3)  # room for the printed figures and the legend
    _plain(axes, "y")
    axes.set_title(_wrap(work, 60), fontsize=10)
    axes.legend(loc="upper center", ncols=2, fontsize=8)


def _tick(n: str, row: Row) -> str:
    """'N = 2', with what went wrong in the run beneath it (duplicates, inversions, refusals) if anything."""
    extra = row.extra or {}
    problems = [
        f"{side}: {extra[f'{key}_{key_of}']:,.0f} {words}"
        for key_of, words in _PROBLEMS.items()
        for side, key in (("merlin", "merlin"), (_peer_of(row), "peer"))
        if extra.get(f"{key}_{key_of}")
    ]
    return "\n".join([n, *problems])


def _first(row: Row) -> tuple[str, float, float] | None:
    """What 'first' means for ``row``, and merlin's and its peer's time to it (s)."""
    for key, words in _FIRSTS.items():
        extra = row.extra or {}
        if f"merlin_{key}" in extra and f"peer_{key}" in extra:
            return words, extra[f"merlin_{key}"], extra[f"peer_{key}"]
    return None


def _first_panel(axes: Axes, rows: list[Row], colours: dict[str, str]) -> None:
    """Each side's time from its start (processes, or connector created) to its first event written."""
    width = 0.38
    labels = []
    for x, row in enumerate(rows):
        words, merlin, peer = _first(row) or ("", 0.0, 0.0)
        name = _peer_of(row)
        mine = axes.bar(x - width / 2, merlin, width, color=MERLIN, label="merlin" if x == 0 else "_")
        axes.bar_label(mine, [f"{merlin:.2f}"], padding=2, fontsize=8)
        theirs = axes.bar(x + width / 2, peer, width, color=_colour(colours, name), label=name)
        axes.bar_label(theirs, [f"{peer:.2f}"], padding=2, fontsize=8)
        match = _GROUPED.match(row.measure)
        labels.append(f"{words}, N = {match['n']}" if match else words)
    axes.set_xticks(range(len(rows)), labels, fontsize=8)
    axes.set_ylabel("seconds")
    axes.set_yscale("linear")
    axes.set_ylim(0, _top_first(rows) * 1.3)
    axes.set_title("start → first event written (processes started, or connector created)", fontsize=10)
    handles, names = axes.get_legend_handles_labels()
    unique = dict(zip(names, handles, strict=True))
    axes.legend(unique.values(), unique.keys(), loc="upper center", ncols=3, fontsize=8)


def _top_first(rows: list[Row]) -> float:
    return max(max(first[1], first[2]) for row in rows if (first := _first(row)) is not None)


def _p99_panel(axes: Axes, rows: list[Row], colours: dict[str, str]) -> None:
    """merlin's p99 and its peer's for each row that measured both, on a linear axis from 0."""
    width = 0.38
    for x, row in enumerate(rows):
        mine, theirs = row.p99_ms or 0.0, _peer_p99(row) or 0.0
        name = _peer_of(row)
        bar = axes.bar(x - width / 2, mine, width, color=MERLIN, label="merlin" if x == 0 else "_")
        axes.bar_label(bar, [f"{mine:,.1f}"], padding=2, fontsize=8)
        peer = axes.bar(x + width / 2, theirs, width, color=_colour(colours, name), label=name)
        axes.bar_label(peer, [f"{theirs:,.1f}"], padding=2, fontsize=8)
    axes.set_xticks(range(len(rows)), [_wrap(row.measure.split(":", 1)[0] + _n_of(row), 24) for row in rows],
                    fontsize=8)  # fmt: skip
    axes.set_ylabel("milliseconds")
    axes.set_yscale("linear")
    axes.set_ylim(0, max(max(row.p99_ms or 0.0, _peer_p99(row) or 0.0) for row in rows) * 1.3)
    axes.set_title("p99, a message's POST sent → each subscriber's receipt", fontsize=10)
    handles, names = axes.get_legend_handles_labels()
    unique = dict(zip(names, handles, strict=True))
    axes.legend(unique.values(), unique.keys(), loc="upper center", ncols=2, fontsize=8)


def _n_of(row: Row) -> str:
    match = _GROUPED.match(row.measure)
    return f", N = {match['n']}" if match else ""


# The scenarios.


@dataclass
class _Panel:
    title: str
    rows: list[Row]
    draw: Callable[[Axes, list[Row]], None]
    weight: float  # its share of its column's height


def _scenarios_figure(rows: list[Row], caption: str) -> Figure:
    left = [*_measured_panels(rows), *_beside_panels(rows)]
    right = _right_panels(rows)
    columns = [column for column in (left, right) if column]
    if not columns:
        raise ValueError("no row of this run can be charted")
    tallest = max(sum(panel.weight for panel in column) for column in columns)
    chart = Figure(figsize=(9.5 * len(columns), max(5.0, tallest * 0.42)), layout="constrained")
    grid = chart.add_gridspec(1, len(columns))
    for place, column in enumerate(columns):
        # The shorter column ends in a blank cell: stretched to the taller one, one row would fill a page.
        ratios = [panel.weight for panel in column]
        spare = tallest - sum(ratios)
        if spare > 0.5:
            ratios.append(spare)
        cells = grid[0, place].subgridspec(len(ratios), 1, height_ratios=ratios)
        for index, panel in enumerate(column):
            axes = chart.add_subplot(cells[index])
            panel.draw(axes, panel.rows)
            axes.set_title(panel.title, fontsize=10)
    chart.suptitle(f"merlin's benchmarks{caption}")
    _shared_legend(chart)
    return chart


def _shared_legend(chart: Figure) -> None:
    """One legend below the panels for what they share: inside a panel it would hide a row."""
    shared: dict[str, Artist] = {}
    for axes in chart.axes:
        if axes.get_legend() is None:
            for handle, label in zip(*axes.get_legend_handles_labels(), strict=True):
                shared.setdefault(label, handle)
    if shared:
        chart.legend(list(shared.values()), list(shared), loc="outside lower center", ncols=len(shared),
                     fontsize=8)  # fmt: skip


def _measured_panels(rows: list[Row]) -> list[_Panel]:
    """A panel of rates per scenario, then one of durations: each beside what it is measured against."""
    scenarios: dict[str, list[Row]] = {}
    for row in rows:
        if row.unit.endswith("/s") and row.memory is None and row.peer is None:
            scenarios.setdefault(row.scenario, []).append(row)
    panels = [_Panel(f"{name}: per second", group, _measured, len(group) * 1.6 + 2)
              for name, group in scenarios.items()]  # fmt: skip
    durations = [row for row in rows if row.unit == "s"]
    if durations:
        # Every scenario's durations share a panel: each row says whose it is.
        panels.append(
            _Panel("durations, seconds", durations, partial(_measured, named=True), len(durations) * 1.6 + 2)
        )
    return panels


def _beside_panels(rows: list[Row]) -> list[_Panel]:
    """A panel per scenario and peer: merlin's bar beside the peer's, as in the peers' chart."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        if row.peer is not None and row.limit is not None:
            groups.setdefault((row.scenario, row.peer), []).append(row)
    return [_Panel(f"{scenario}: beside {peer}", group, _beside, len(group) * 2.0 + 2)
            for (scenario, peer), group in groups.items()]  # fmt: skip


def _beside(axes: Axes, rows: list[Row]) -> None:
    """merlin's bar and the peer's for each row, on a linear axis from 0, each figure and p99 printed."""
    colours: dict[str, str] = {}
    height = 0.38
    for y, row in enumerate(rows):
        name, peer = _peer_of(row), row.limit or 0.0
        mine = axes.barh(y - height / 2, row.merlin, height, color=MERLIN, label="merlin")
        axes.bar_label(mine, [_beside_figure(row.merlin, row.p99_ms)], padding=3, fontsize=7)
        theirs = axes.barh(y + height / 2, peer, height, color=_colour(colours, name), label=name)
        share = f", {peer / row.merlin:.0%} of merlin" if row.merlin else ""
        axes.bar_label(theirs, [_beside_figure(peer, _peer_p99(row)) + share], padding=3, fontsize=7)
    axes.set_yticks(range(len(rows)), [_wrap(row.measure) for row in rows], fontsize=7)
    axes.invert_yaxis()
    axes.set_xscale("linear")
    axes.set_xlim(0, max(max(row.merlin, row.limit or 0.0) for row in rows) * 1.7)
    _plain(axes)
    axes.set_xlabel(rows[0].unit, fontsize=8)


def _beside_figure(value: float, p99: float | None) -> str:
    printed = f"{value:,.0f}" if value >= 100 else f"{value:,.2f}"
    return printed + (f", p99 {p99:,.1f} ms" if p99 is not None else "")


def _right_panels(rows: list[Row]) -> list[_Panel]:
    latency = [row for row in rows if row.p50_ms is not None and row.p99_ms is not None]
    memories = [row for row in rows if row.memory is not None and row.memory.samples]
    panels = []
    if latency:
        panels.append(_Panel("latency: p50 and p99", latency, _latency, len(latency) * 1.1 + 2))
    if memories:
        panels.append(_Panel("resident memory over the soak", memories, _memory, 14))
    return panels


def _label(row: Row, scenario: bool) -> str:
    name = f"{row.scenario}: {row.measure}" if scenario else row.measure
    beside = f"\nvs {row.limit_name}" if row.limit is not None and row.limit_name else ""
    return f"{_wrap(name)}{beside}"


def _measured(axes: Axes, rows: list[Row], named: bool = False) -> None:
    """merlin's bar inside a dashed outline of what it is measured against, on a linear axis from 0.

    ``named``: each row's label starts with its scenario (a panel of several scenarios).
    """
    limited = False
    for y, row in enumerate(rows):
        if row.limit is not None:
            axes.barh(y, row.limit, height=0.8, label="_" if limited else LIMIT_LABEL, **LIMIT_STYLE)
            limited = True
        bar = axes.barh(y, row.merlin, height=0.45, color=MERLIN, label="merlin" if y == 0 else "_")
        # On white: a figure that crosses the outline's edge stays legible.
        axes.bar_label(bar, [_figure(row)], padding=3, fontsize=7,
                       bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5})  # fmt: skip
    axes.set_yticks(range(len(rows)), [_label(row, named) for row in rows], fontsize=7)
    axes.invert_yaxis()
    axes.set_xscale("linear")
    top = max(max(row.merlin, row.limit or 0) for row in rows)
    axes.set_xlim(0, top * 1.55)  # room for the printed figures
    _plain(axes)


def _figure(row: Row) -> str:
    """merlin's figure as printed on its bar: the value, and its share of what it is measured against."""
    value = f"{row.merlin:,.0f}" if row.merlin >= 100 else f"{row.merlin:,.2f}"
    if not row.limit:
        return f"{value} {row.unit}"
    limit = f"{row.limit:,.0f}" if row.limit >= 100 else f"{row.limit:,.2f}"
    return f"{value} {row.unit}, {row.merlin / row.limit:.0%} of {limit}"


def _latency(axes: Axes, rows: list[Row]) -> None:
    """p50 and p99 as points joined by a line: on a log axis, a bar's length would mean nothing."""
    for y, row in enumerate(rows):
        p50, p99 = row.p50_ms or 0.0, row.p99_ms or 0.0
        axes.plot([p50, p99], [y, y], color="gray", linewidth=1, zorder=1)
        axes.scatter([p50], [y], color=MERLIN, marker="o", s=22, label="p50" if y == 0 else "_", zorder=2)
        axes.scatter([p99], [y], color="#d62728", marker="D", s=22, label="p99" if y == 0 else "_", zorder=2)
        axes.annotate(f"{p50:,.1f} / {p99:,.1f} ms", (p99, y), xytext=(6, -3), textcoords="offset points",
                      fontsize=7)  # fmt: skip
    axes.set_yticks(range(len(rows)), [_wrap(f"{row.scenario}: {row.measure}", 60) for row in rows],
                    fontsize=7)  # fmt: skip
    axes.invert_yaxis()
    axes.set_xscale("log")
    lowest = min(min(row.p50_ms or 1.0, row.p99_ms or 1.0) for row in rows)
    highest = max(row.p99_ms or 1.0 for row in rows)
    axes.set_xlim(max(lowest / 2, 0.01), highest * 12)  # room for the printed figures
    _plain(axes)
    axes.set_xlabel("milliseconds (log scale); printed: p50 / p99", fontsize=8)


def _memory(axes: Axes, rows: list[Row]) -> None:
    """Each process's RSS over a soak; the warm-up is before minute 0."""
    memories: list[Memory] = [row.memory for row in rows if row.memory is not None]
    for memory in memories:
        minutes = [minute for minute, _events, _mb in memory.samples]
        axes.plot(minutes, [mb for _minute, _events, mb in memory.samples], label=memory.process)
    axes.axvline(0, color="grey", linestyle=":", linewidth=1)
    axes.set_xlabel("minutes (warm-up before 0)", fontsize=8)
    axes.set_ylabel("RSS, MB")
    axes.legend(fontsize=7)
