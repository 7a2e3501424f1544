"""The peers comparison runs end to end at tiny sizes: Connect worker, both sinks, merlin beside each."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.__main__ import run_peers
from bench.live.accounting import PER_CORE
from bench.report import RECORDED, save


# The first run on a machine also fetches Kafka Connect and its plugins with Maven (about 30 s); Centrifugo
# is built beforehand (`make centrifugo`, a prerequisite of `make test`).
@pytest.mark.timeout(300)
async def test_a_quick_peers_run_measures_merlin_and_its_peer_in_every_row(tmp_path: Path) -> None:
    recorded = sorted(RECORDED.iterdir())
    rows = await run_peers(runs=1, quick=True)
    assert [row.unit for row in rows] == ["events/s", "deliveries/s", PER_CORE]
    for row in rows:
        assert row.merlin > 0, row
        assert row.limit is not None, row
        assert row.limit > 0, row
    _data, picture = save(rows, runs=1, quick=True, directory=tmp_path)
    assert picture is not None
    assert picture.read_bytes().startswith(b"\x89PNG")
    assert sorted(RECORDED.iterdir()) == recorded  # a test's run is never one to commit
