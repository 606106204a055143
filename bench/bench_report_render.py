"""Time render_report on a saved plan.json (default: plan the bundled example first).

    .venv/bin/python bench/bench_report_render.py [--plan out/plan.json] [--repeat 3]

Prints the matplotlib import time, each plot's time and the whole render, with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--plan", type=Path, help="a plan.json (default: plan data/example first)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if args.plan:
        plan = json.loads(args.plan.read_text())
    else:
        from datetime import UTC, datetime

        from greencpn.clock import SimClock
        from greencpn.config import load_config
        from greencpn.controller.forecast import make_plan

        cfg = load_config(Path(__file__).resolve().parents[1] / "data" / "example" / "fleet.toml")
        plan = make_plan(cfg, SimClock(datetime(2023, 4, 25, tzinfo=UTC))).document
    print(
        f"machine: nproc={os.cpu_count()}, load={os.getloadavg()[0]:.1f}, "
        f"python {platform.python_version()}"
    )
    t = time.perf_counter()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401

    print(f"import matplotlib: {time.perf_counter() - t:.2f} s")
    from greencpn.report import plots
    from greencpn.report.render import render_report

    with tempfile.TemporaryDirectory() as tmp:
        for name, func in plots._FUNCS.items():
            t = time.perf_counter()
            func(plan, Path(tmp) / name)
            print(f"{name}: {time.perf_counter() - t:.2f} s")
        for i in range(args.repeat):
            t = time.perf_counter()
            render_report(plan, Path(tmp) / f"r{i}")
            print(
                f"render_report #{i + 1}: {time.perf_counter() - t:.2f} s "
                f"(load {os.getloadavg()[0]:.1f})"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
