"""Pyomo -> HiGHS hand-off on the L model, stock vs FastHighs, side by side.

Builds the L instance's plan MILP once (no anchor), then loads it ``reps`` times into
pyomo.contrib.solver's stock HiGHS interface and into
:func:`greencpn.optimize.builder.fast_highs_class`, alternating, and prints the
``set_instance`` seconds of each and the load average.

    .venv/bin/python bench/bench_handoff.py [reps]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def main() -> None:
    import instances
    from instances import START, convert
    from pyomo.contrib.solver.solvers.highs import Highs

    from greencpn.clock import SimClock
    from greencpn.config import load_config
    from greencpn.controller.forecast import make_inputs
    from greencpn.optimize.builder import fast_highs_class
    from greencpn.optimize.milp import PlanModel

    if not instances.INSTANCES.is_dir():  # a worktree one level deeper than the main checkout
        instances.INSTANCES = HERE.parent.parent / "shared" / "bench-instances"
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    with tempfile.TemporaryDirectory() as tmp:
        path = convert("L", Path(tmp), window=4, time_limit_s=120.0)
        inp = make_inputs(load_config(path), SimClock(START))
    t = time.perf_counter()
    m = PlanModel(inp)
    print(f"build {time.perf_counter() - t:.2f} s, {m.mb.n_rows()} rows, {m.mb.n_vars} vars")
    res: dict[str, list[float]] = {"stock": [], "fast": []}
    for _ in range(reps):
        for name, cls in (("stock", Highs), ("fast", fast_highs_class())):
            s = cls()
            t = time.perf_counter()
            s.set_instance(m.model)
            res[name].append(time.perf_counter() - t)
            del s
    for k, v in res.items():
        print(f"set_instance {k}: " + ", ".join(f"{x:.2f}" for x in v) + " s")
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
