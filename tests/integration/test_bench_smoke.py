"""The benchmark harness runs end to end at tiny sizes, so it cannot rot; the full run is not a test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.__main__ import run
from bench.report import save, table


@pytest.mark.timeout(600)
async def test_a_quick_run_measures_every_scenario_and_writes_its_results(tmp_path: Path) -> None:
    rows = await run(["write", "projection", "read"], runs=1, quick=True)
    measures = {(row.scenario, row.measure.split(" (")[0]) for row in rows}
    assert ("write", "POST /messages") in measures
    assert {row.scenario for row in rows} == {"write", "projection", "read"}
    for row in rows:
        assert row.merlin > 0, row
        if row.limit is not None:
            assert row.limit > 0, row
    write = next(row for row in rows if row.measure.startswith("POST"))
    assert write.extra is not None
    assert write.extra["errors"] == 0
    assert "ratio" in table(rows)
    data, picture = save(rows, runs=1, quick=True, directory=tmp_path)
    document = json.loads(data.read_text())
    assert len(document["rows"]) == len(rows)
    assert picture is not None
    assert picture.read_bytes().startswith(b"\x89PNG")
