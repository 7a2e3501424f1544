"""``python -m bench`` (``make bench``): run the scenarios, print one table, save JSON and a chart."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

from bench.harness import Row, bench
from bench.peers import peers
from bench.report import save, table
from bench.scenarios import SCENARIOS


async def run(names: list[str], runs: int, quick: bool) -> list[Row]:
    rows: list[Row] = []
    async with bench(quick) as environment:
        for name in names:
            rows.extend(await SCENARIOS[name](environment, runs))
    return rows


async def run_peers(runs: int, quick: bool) -> list[Row]:
    async with bench(quick) as environment:
        return await peers(environment, runs)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes and one run: a smoke test of the harness"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs per figure; the median is reported")
    parser.add_argument("--only", nargs="*", choices=sorted(SCENARIOS), default=list(SCENARIOS))
    parser.add_argument(
        "--peers",
        action="store_true",
        help="only merlin beside Kafka Connect's Debezium JDBC and Camel HTTP sinks (N = 1, 2)",
    )
    arguments = parser.parse_args(argv)
    runs = 1 if arguments.quick else arguments.runs
    if arguments.peers:
        rows = asyncio.run(run_peers(runs, arguments.quick))
    else:
        rows = asyncio.run(run(arguments.only, runs, arguments.quick))
    print(table(rows))
    data, picture = save(rows, runs, arguments.quick)
    print(f"\nresults: {data}" + (f"\nchart:   {picture}" if picture else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
