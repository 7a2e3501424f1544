"""The benchmarks' charts, built from sample rows and inspected as matplotlib Figures (Agg canvas, no pyplot).

The peers are named and drawn beside merlin on linear axes; a limit is an outline named under its
row; a panel without data is not drawn; a saved run's chart can be drawn again from its JSON.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.text import Text

from bench.__main__ import main
from bench.charts import LATENCY_NOT_MEASURED, figure, peer_name
from bench.harness import PEERS, Memory, Row
from bench.report import RECORDED, destination, load, save, table
from tests import PROJECT_ROOT

JDBC = "Connect 4.3.1 + Debezium JDBC sink 3.6.0"
HTTP = "Connect 4.3.1 + Camel HTTP sink 0.11.0"


def peers_rows() -> list[Row]:
    """A peers run's rows as bench.peers.comparison makes them (figures from a real run)."""
    return [
        Row(PEERS, "200,000 events into PostgreSQL, N = 1", "events/s", 36_524.8, 29_118.0,
            f"{JDBC}, tasks.max=1", extra={"merlin_first_row_s": 1.21, "peer_first_row_s": 0.44}),
        Row(PEERS, "200,000 events into PostgreSQL, N = 2", "events/s", 46_698.6, 36_959.8,
            f"{JDBC}, tasks.max=2", extra={"merlin_first_row_s": 1.49, "peer_first_row_s": 0.46}),
        Row(PEERS, "20,000 events, 100 rooms, to the downstream, N = 1", "deliveries/s", 13_191.5, 9_182.9,
            f"{HTTP}, tasks.max=1", extra={"merlin_first_s": 1.29, "peer_first_s": 0.32,
                                           "merlin_duplicates": 0.0, "peer_duplicates": 0.0}),
        Row(PEERS, "20,000 events, 100 rooms, to the downstream, N = 2", "deliveries/s", 10_972.3, 9_181.6,
            f"{HTTP}, tasks.max=2", extra={"merlin_first_s": 1.89, "peer_first_s": 0.48,
                                           "merlin_duplicates": 46.0, "peer_duplicates": 0.0}),
    ]  # fmt: skip


def rates_only() -> list[Row]:
    """A projection run: rates, one without a limit, and no latency at all."""
    return [
        Row("projection", "200,000 events into SQLite", "events/s", 15_171.1, 104_420.9,
            "raw consumer, decode only"),
        Row("projection", "200,000 events into PostgreSQL", "events/s", 20_076.3, 104_420.9,
            "raw consumer, decode only"),
        Row("projection", "200,000 events, PostgreSQL store alone (no Kafka)", "events/s", 32_755.9),
    ]  # fmt: skip


def many_kinds() -> list[Row]:
    """Rates beside limits and an offered rate, a duration, a p99 in ms, and a soak's memory."""
    memory = Memory("forwarder", 113.1, 113.1, 140.7, 161.5, 747.7, 265.5, 727.4, 59_813.0,
                    [(-5.0, 0.0, 113.1), (0.0, 0.0, 120.0), (10.0, 59_813.0, 161.5)])  # fmt: skip
    return [
        Row("write", "POST /messages (acks=all)", "req/s", 2_094.1, 3_740.6, "same HTTP stack, no Kafka",
            26.3, 120.8),
        Row("write", "vs raw confluent-kafka producer", "msg/s", 2_094.1, 51_970.6, "raw producer loop", 1.4,
            512.6),
        Row("end-to-end", "500 msg/s: POST sent -> readable", "msg/s", 500.0, 500, "offered rate", 23.0,
            80.1),
        Row("read", "GET one message, 100/s, beside 1,000 reads waiting on after_position", "ms (p99)",
            41.0, 38.0, "the same without them", 12.0, 41.0),
        Row("recovery", "second worker started -> both consuming", "s", 1.38),
        Row("soak", "forwarder: RSS at the end, beside after the warm-up", "MB", 161.5, 113.1,
            "RSS after the warm-up", memory=memory),
    ]  # fmt: skip


def texts(chart: Figure) -> list[str]:
    return [text.get_text() for text in chart.findobj(Text) if text.get_text()]


def legend_labels(chart: Figure) -> list[str]:
    legends = [*chart.legends, *(axes.get_legend() for axes in chart.axes)]
    return [text.get_text() for legend in legends if legend is not None for text in legend.get_texts()]


def titled(chart: Figure, words: str) -> list[Axes]:
    return [axes for axes in chart.axes if words in axes.get_title()]


def test_the_peers_are_named_in_the_legend_and_nothing_calls_them_a_limit() -> None:
    chart = figure(peers_rows())
    labels = legend_labels(chart)
    assert {"merlin", "Debezium JDBC sink 3.6.0", "Camel HTTP sink 0.11.0"} <= set(labels)
    assert [text for text in texts(chart) if "limit" in text.lower()] == []


def test_the_peers_table_calls_the_figure_beside_merlins_the_peer() -> None:
    [header, _rule, *_] = table(peers_rows()).splitlines()
    assert header.split()[4:6] == ["peer", "ratio"]
    assert "limit" not in header
    assert "limit" in table(rates_only()).splitlines()[0]


def test_a_peer_is_named_by_its_sink() -> None:
    assert peer_name(f"{JDBC}, tasks.max=2") == "Debezium JDBC sink 3.6.0"
    assert peer_name("Camel HTTP sink") == "Camel HTTP sink"


def test_the_peers_chart_is_linear_from_zero_with_each_peers_share_of_merlin_printed() -> None:
    chart = figure(peers_rows())
    for axes in chart.axes:
        assert (axes.get_xscale(), axes.get_yscale()) == ("linear", "linear")
        assert axes.get_ylim()[0] == 0
    printed = texts(chart)
    assert "29,118\n80% of merlin" in printed  # 29,118 / 36,525
    assert "9,183\n70% of merlin" in printed
    assert "36,525" in printed


def test_the_peers_chart_has_no_latency_panel_and_says_why() -> None:
    chart = figure(peers_rows())
    assert titled(chart, "latency") == []
    assert LATENCY_NOT_MEASURED in texts(chart)
    # One panel per work, and one of the time to the first event: nothing else.
    assert len(chart.axes) == 3
    assert len(titled(chart, "first event")) == 1


def test_what_went_wrong_in_a_peers_run_is_under_its_bars() -> None:
    [_, delivery, _] = figure(peers_rows()).axes
    ticks = [label.get_text() for label in delivery.get_xticklabels()]
    assert ticks == ["N = 1", "N = 2\nmerlin: 46 duplicates"]


@pytest.mark.parametrize("rows", [peers_rows(), rates_only(), many_kinds()], ids=["peers", "rates", "kinds"])
def test_every_panel_drawn_has_data(rows: list[Row]) -> None:
    chart = figure(rows)
    assert isinstance(chart.canvas, FigureCanvasAgg)  # drawn off screen, no pyplot
    assert chart.axes
    assert [axes.get_title() for axes in chart.axes if not axes.has_data()] == []


def test_a_run_without_latencies_has_no_latency_panel() -> None:
    chart = figure(rates_only())
    assert [axes.get_title() for axes in chart.axes] == ["projection: per second"]
    assert len(titled(figure(many_kinds()), "latency")) == 1


def test_a_limit_is_a_dashed_outline_as_wide_as_the_limit_and_named_under_its_row() -> None:
    [axes] = figure(rates_only()).axes
    bars = [patch for patch in axes.patches if isinstance(patch, Rectangle)]
    outlines = [bar for bar in bars if not bar.get_fill()]
    filled = [bar for bar in bars if bar.get_fill()]
    assert sorted(round(bar.get_width(), 1) for bar in outlines) == [104_420.9, 104_420.9]
    assert all(bar.get_linestyle() == "--" for bar in outlines)
    assert sorted(round(bar.get_width(), 1) for bar in filled) == [15_171.1, 20_076.3, 32_755.9]
    ticks = [label.get_text() for label in axes.get_yticklabels()]
    assert ticks[0] == "200,000 events into SQLite\nvs raw consumer, decode only"
    assert "vs" not in ticks[2]  # no limit, none named
    assert "15,171 events/s, 15% of 104,421" in texts(axes.figure)  # type: ignore[arg-type]
    assert (axes.get_xscale(), axes.get_xlim()[0]) == ("linear", 0)


def test_the_legend_tells_merlin_from_its_limits() -> None:
    labels = legend_labels(figure(many_kinds()))
    assert "merlin" in labels
    assert [label for label in labels if "limit" in label] != []
    assert "limit" not in labels  # a bare 'limit' says nothing of what it is


def test_only_rates_are_on_a_per_second_axis_and_durations_have_their_own() -> None:
    chart = figure(many_kinds())
    rated = [label.get_text() for axes in titled(chart, "per second") for label in axes.get_yticklabels()]
    assert not [label for label in rated if "after_position" in label or "worker" in label or "RSS" in label]
    [durations] = titled(chart, "durations")
    assert [label.get_text() for label in durations.get_yticklabels()] == [
        "recovery: second worker started -> both\nconsuming"
    ]
    [memory] = titled(chart, "memory")
    drawn = [str(line.get_label()) for line in memory.get_lines()]
    assert [label for label in drawn if not label.startswith("_")] == ["forwarder"]  # "_": unlabelled


def test_a_run_is_either_the_peers_or_the_scenarios() -> None:
    with pytest.raises(ValueError, match="either"):
        figure([*peers_rows(), *rates_only()])


def test_a_saved_run_loads_back_as_the_same_rows(tmp_path: Path) -> None:
    rows = many_kinds()
    data, picture = save(rows, runs=3, quick=False, directory=tmp_path)
    assert picture is not None
    assert picture.read_bytes().startswith(b"\x89PNG")
    loaded, document = load(data)
    assert loaded == rows
    assert document["runs_per_figure"] == 3


def test_render_draws_a_saved_runs_chart_again_beside_its_json(tmp_path: Path) -> None:
    data, picture = save(peers_rows(), runs=3, quick=False, directory=tmp_path)
    assert picture is not None
    picture.unlink()
    written = data.read_bytes()
    assert main(["--render", str(data)]) == 0
    assert picture.read_bytes().startswith(b"\x89PNG")
    assert data.read_bytes() == written
    assert sorted(path.name for path in tmp_path.iterdir()) == [data.name, picture.name]


def test_a_json_from_before_memory_was_saved_still_renders(tmp_path: Path) -> None:
    document = {"when": "20261125T134132Z", "runs_per_figure": 3, "quick": False, "machine": {"cpus": 2},
                "rows": [{key: value for key, value in row.items() if key != "memory"}
                         for row in json.loads(json.dumps([vars(row) for row in peers_rows()]))]}  # fmt: skip
    data = tmp_path / "old.json"
    data.write_text(json.dumps(document))
    assert main(["--render", str(data)]) == 0
    assert (tmp_path / "old.png").read_bytes().startswith(b"\x89PNG")


def test_a_run_is_written_where_git_ignores_it_unless_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MERLIN_LOCAL_VAR_DIR", raising=False)
    unrecorded = destination(record=False)
    assert unrecorded == PROJECT_ROOT / "var" / "bench"
    assert destination(record=True) == RECORDED == PROJECT_ROOT / "bench" / "results"

    def ignored(path: Path) -> bool:
        check = ["git", "check-ignore", "-q", str(path.relative_to(PROJECT_ROOT))]
        return subprocess.run(check, cwd=PROJECT_ROOT, check=False).returncode == 0

    assert ignored(unrecorded / "20261208T000000Z.json")
    assert not ignored(RECORDED / "20261208T000000Z.json")
