"""Bench: parse the carbon files (the 3-year x 10-zone hourly file must take <= 1 s).

Run: ``.venv/bin/python bench/bench_carbon_parse.py`` (prints a Markdown table);
``bench/forecast_accuracy.py`` runs it too and adds the table to ``bench/results/forecast.md``.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from greencpn.sources.files import (
    read_electricitymaps_export,
    read_lets_wait_awhile,
    read_watttime_actual,
    read_watttime_forecasts,
    read_wide,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "carbon"


def _time(fn: Callable[[], object], repeat: int = 5) -> tuple[float, float]:
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs), max(runs)


def measure() -> str:
    """Time each reader (5 runs) and return a Markdown section."""
    cases: list[tuple[str, Callable[[], object]]] = [
        (
            "wide 3 y x 10 zones hourly (26,280 rows)",
            lambda: read_wide(DATA / "electricitymaps_hourly_lca_2021-2023.csv"),
        ),
        (
            "Electricity Maps export DE 2023 (8,760 rows)",
            lambda: read_electricitymaps_export(
                DATA / "raw_electricitymaps" / "DE_2023_hourly.csv"
            ),
        ),
        (
            "Let's Wait Awhile GB 2020, irregular -> 1 h (21,980 rows)",
            lambda: read_lets_wait_awhile(DATA / "lets_wait_awhile_2020" / "gb_ci.csv"),
        ),
        (
            "WattTime actual 5-min (8,928 rows)",
            lambda: read_watttime_actual(
                DATA / "watttime_caiso_north_2023" / "watttime2023_caiso-north_actual.csv"
            ),
        ),
        (
            "WattTime issued forecasts (115,932 rows)",
            lambda: read_watttime_forecasts(
                DATA / "watttime_caiso_north_2023" / "watttime2023_caiso-north_forecast.csv"
            ),
        ),
    ]
    lines = ["| file | median s | max s |", "|---|---|---|"]
    for name, fn in cases:
        med, mx = _time(fn)
        lines.append(f"| {name} | {med:.3f} | {mx:.3f} |")
    machine = (
        f"Machine: {os.cpu_count()} CPUs (nproc), {platform.machine()}, "
        f"Python {platform.python_version()}, 5 runs each (`bench/bench_carbon_parse.py`)."
    )
    return "\n".join(
        ["### Parsing the carbon files (`greencpn.sources.files`)", "", *lines, "", machine, ""]
    )


def main() -> int:
    if not DATA.is_dir():
        print(f"real data not found at {DATA}; nothing to bench", file=sys.stderr)
        return 1
    print(measure())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
