"""Pyomo -> HiGHS hand-off on the L model, stock vs FastHighs, side by side; and the MILP
build + fast hand-off of this tree against another tree (``--compare OLD``).

Default: builds the L instance's plan MILP once (no anchor), then loads it ``reps`` times into
pyomo.contrib.solver's stock HiGHS interface and into
:func:`greencpn.optimize.handoff.fast_highs_class`, alternating, and prints the
``set_instance`` seconds of each and the load average.

``--compare OLD_TREE``: one child process per round and tree, alternating NEW (this tree) and
OLD (e.g. ``git archive <commit> | tar -x -C /tmp/old``), each timing — wall and CPU
(``time.process_time``) — the ``PlanModel`` build and the FastHighs ``set_instance`` of the
same L inputs, and printing a digest of the HiGHS model it loaded (columns, bounds,
integrality, rows, objective), so the two trees are seen to hand over the same model.

    .venv/bin/python bench/bench_handoff.py [reps]
    .venv/bin/python bench/bench_handoff.py --compare /tmp/old --rounds 3 [--gc off,off]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _inputs():
    import instances
    from instances import START, convert

    from greencpn.clock import SimClock
    from greencpn.config import load_config
    from greencpn.controller.forecast import make_inputs

    if not instances.INSTANCES.is_dir():  # a worktree one level deeper than the main checkout
        instances.INSTANCES = HERE.parent.parent / "shared" / "bench-instances"
    with tempfile.TemporaryDirectory() as tmp:
        path = convert("L", Path(tmp), window=4, time_limit_s=120.0)
        return make_inputs(load_config(path), SimClock(START))


def stock_vs_fast(reps: int) -> None:
    from pyomo.contrib.solver.solvers.highs import Highs

    from greencpn.optimize.handoff import fast_highs_class
    from greencpn.optimize.milp import PlanModel

    inp = _inputs()
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


def child(gc_off: bool) -> None:
    """One round in this process's tree: build and hand-off timed, the HiGHS model hashed;
    ``gc_off``: Python's cyclic garbage collector disabled around both (as ``make_plan``
    pauses it since 2026-12-03; an OLD tree without that runs them with it on)."""
    import gc

    import numpy as np

    import greencpn
    from greencpn.optimize.milp import PlanModel

    try:
        from greencpn.optimize.handoff import fast_highs_class
    except ImportError:  # an OLD tree before 2026-12-03: the hand-off lived in builder
        from greencpn.optimize.builder import fast_highs_class  # type: ignore[attr-defined,no-redef]

    print(f"greencpn from {Path(greencpn.__file__).parent}", file=sys.stderr)
    inp = _inputs()
    load = os.getloadavg()[0]
    if gc_off:
        gc.disable()
    w, c = time.perf_counter(), time.process_time()
    m = PlanModel(inp)
    build = (time.perf_counter() - w, time.process_time() - c)
    s = fast_highs_class()()
    w, c = time.perf_counter(), time.process_time()
    s.set_instance(m.model)
    handoff = (time.perf_counter() - w, time.process_time() - c)
    gc.enable()
    lp = s._solver_model.getLp()
    h = hashlib.sha256()
    for arr in (
        lp.col_cost_,
        lp.col_lower_,
        lp.col_upper_,
        lp.row_lower_,
        lp.row_upper_,
        lp.a_matrix_.start_,
        lp.a_matrix_.index_,
        lp.a_matrix_.value_,
        [int(x) for x in lp.integrality_],
    ):
        h.update(np.asarray(arr).tobytes())
    out = {
        "load": load,
        "build_wall_s": build[0],
        "build_cpu_s": build[1],
        "handoff_wall_s": handoff[0],
        "handoff_cpu_s": handoff[1],
        "cols": int(lp.num_col_),
        "rows": int(lp.num_row_),
        "nnz": len(lp.a_matrix_.index_),
        "model_sha256": h.hexdigest()[:16],
    }
    print("RESULT " + json.dumps(out))


def compare(old: Path, rounds: int, gc_modes: list[str]) -> None:
    """``gc_modes`` per tree, e.g. ``["off", "on"]``: NEW with the collector off (as
    ``make_plan`` runs it), OLD with it on (as OLD's ``make_plan`` ran it)."""
    import statistics

    trees = {"NEW": (HERE.parent, gc_modes[0]), "OLD": (old, gc_modes[-1])}
    got: dict[str, list[dict]] = {k: [] for k in trees}
    for r in range(rounds):
        for name, (tree, gcm) in trees.items():
            env = dict(os.environ, PYTHONPATH=f"{tree}:{HERE}")
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child"]
            cmd += ["--gc-off"] if gcm == "off" else []
            cp = subprocess.run(
                cmd,
                env=env,
                capture_output=True,
                text=True,
                check=True,
                cwd=tree,
            )
            line = next(x for x in cp.stdout.splitlines() if x.startswith("RESULT "))
            row = json.loads(line[len("RESULT ") :]) | {"gc": gcm}
            got[name].append(row)
            print(f"round {r + 1} {name}: " + json.dumps(row), flush=True)
    print()
    new_gc, old_gc = trees["NEW"][1], trees["OLD"][1]
    print(f"| | NEW (this tree, gc {new_gc}) median | OLD (gc {old_gc}) median | NEW / OLD |")
    print("|---|---|---|---|")
    for k in ("build_cpu_s", "handoff_cpu_s", "build_wall_s", "handoff_wall_s"):
        n = statistics.median(x[k] for x in got["NEW"])
        o = statistics.median(x[k] for x in got["OLD"])
        print(f"| {k} | {n:.2f} | {o:.2f} | {n / o:.2f} |")
    digests = {name: sorted({x["model_sha256"] for x in rows}) for name, rows in got.items()}
    print(f"HiGHS model digests: {digests} (same model: {digests['NEW'] == digests['OLD']})")
    loads = [x["load"] for rows in got.values() for x in rows]
    print(f"load average {min(loads):.1f}–{max(loads):.1f}; {rounds} rounds, NEW then OLD each")


def main() -> None:
    sys.path.insert(0, str(HERE))
    if "--child" not in sys.argv:  # a child imports greencpn from the PYTHONPATH it was given
        sys.path.insert(1, str(HERE.parent))
    ap = argparse.ArgumentParser()
    ap.add_argument("reps", nargs="?", type=int, default=3)
    ap.add_argument("--compare", type=Path, help="another greencpn tree (OLD)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--gc-off", action="store_true", help="(child) collector off")
    ap.add_argument(
        "--gc",
        default="off,on",
        help="with --compare: collector per tree, NEW,OLD (default off,on: as each tree's "
        "make_plan runs; on,on or off,off compare the code alone)",
    )
    a = ap.parse_args()
    if a.child:
        child(a.gc_off)
    elif a.compare:
        compare(a.compare, a.rounds, a.gc.split(","))
    else:
        stock_vs_fast(a.reps)


if __name__ == "__main__":
    main()
