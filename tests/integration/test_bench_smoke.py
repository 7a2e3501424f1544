"""The benchmark harness runs end to end at tiny sizes, so it cannot rot; the full run is not a test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.__main__ import run
from bench.report import RECORDED, save, table
from bench.scenarios import LONG, SCENARIOS


@pytest.mark.timeout(600)
async def test_a_quick_run_measures_every_scenario_and_writes_its_results(tmp_path: Path) -> None:
    recorded = sorted(RECORDED.iterdir())
    rows = await run([*SCENARIOS, *LONG], runs=1, quick=True)
    measures = {(row.scenario, row.measure.split(" (")[0]) for row in rows}
    assert ("write", "POST /messages") in measures
    assert {row.scenario for row in rows} == {
        "write", "projection", "end-to-end", "delivery", "outage", "recovery", "read", "failover", "settings",
        "live", "soak",
    }  # fmt: skip
    beside = [row for row in rows if row.peer is not None]
    assert [row.peer for row in beside] == ["Centrifugo 6.9.1 uni_sse"]  # live rooms, N = 1
    for row in beside:  # every message reached every subscriber, on both sides
        assert row.extra is not None
        assert (row.extra["merlin_missing"], row.extra["peer_missing"]) == (0, 0), row
    soaked = {row.memory.process for row in rows if row.memory is not None}
    assert soaked == {"write-api", "read-api", "admin-api", "forwarder"}
    for row in rows:
        assert row.merlin > 0, row
        if row.limit is not None:
            assert row.limit > 0, row
    for row in rows:
        if row.extra is not None and "errors" in row.extra:
            assert row.extra["errors"] == 0, row
    for row in rows:  # every latency measured is a real, ordered pair
        if row.p50_ms is not None:
            assert row.p99_ms is not None
            assert 0 < row.p50_ms <= row.p99_ms, row
    assert "ratio" in table(rows)
    assert "KB/1,000 events" in table(rows)
    data, picture = save(rows, runs=1, quick=True, directory=tmp_path)
    document = json.loads(data.read_text())
    assert len(document["rows"]) == len(rows)
    assert picture is not None
    assert picture.read_bytes().startswith(b"\x89PNG")
    assert sorted(RECORDED.iterdir()) == recorded  # a test's run is never one to commit
