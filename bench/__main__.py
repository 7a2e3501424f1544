"""``python -m bench`` (``make bench``): run the scenarios, print one table, save JSON and a chart.

The files go into var/bench/ (git ignores var/); with --record, into bench/results/ to be committed.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from pathlib import Path

from bench.harness import Row, bench
from bench.peers import peers
from bench.report import destination, render, save, table
from bench.scenarios import LONG, SCENARIOS
from kernel import tracing


async def run(
    names: list[str],
    runs: int,
    quick: bool,
    soak_minutes: float | None = None,
    soak_warm_up: int | None = None,
) -> list[Row]:
    rows: list[Row] = []
    scenarios = {**SCENARIOS, **LONG}
    soak_seconds = None if soak_minutes is None else soak_minutes * 60
    async with bench(quick, soak_seconds, soak_warm_up) as environment:
        for name in names:
            rows.extend(await scenarios[name](environment, runs))
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
    parser.add_argument(
        "--only",
        nargs="*",
        choices=sorted({**SCENARIOS, **LONG}),
        default=list(SCENARIOS),
        help="scenarios to run (default: all but soak, which runs only when named)",
    )
    parser.add_argument(
        "--soak-minutes",
        type=float,
        default=None,
        help="the soak's measured part, after its warm-up (default 30; 10 s with --quick)",
    )
    parser.add_argument(
        "--soak-warm-up",
        type=int,
        default=None,
        metavar="EVENTS",
        help="events written at 300 msg/s before the soak's measured part (default 150,000)",
    )
    parser.add_argument(
        "--peers",
        action="store_true",
        help="only merlin beside Kafka Connect's Debezium JDBC and Camel HTTP sinks (N = 1, 2)",
    )
    parser.add_argument(
        "--record",
        action="store_true",
        help="write the JSON and chart into bench/results/, to be committed (default: var/bench/, ignored)",
    )
    parser.add_argument(
        "--render",
        nargs="+",
        type=Path,
        metavar="RESULTS_JSON",
        help="run nothing: draw the chart of each saved run again, beside its JSON (same name, .png)",
    )
    arguments = parser.parse_args(argv)
    if arguments.render:
        for data in arguments.render:
            print(f"chart:   {render(data)}")
        return 0
    # The projection scenario runs a forwarder in this process: with OTEL_* set, it traces as the
    # service does (the services started as processes set up their own).
    tracing.setup_tracing("forwarder")
    runs = 1 if arguments.quick else arguments.runs
    if arguments.peers:
        rows = asyncio.run(run_peers(runs, arguments.quick))
    else:
        rows = asyncio.run(
            run(arguments.only, runs, arguments.quick, arguments.soak_minutes, arguments.soak_warm_up)
        )
    print(table(rows))
    data, picture = save(rows, runs, arguments.quick, destination(arguments.record))
    print(f"\nresults: {data}" + (f"\nchart:   {picture}" if picture else ""))
    if not arguments.record:
        print("(not recorded: --record writes them into bench/results/)")
    tracing.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
