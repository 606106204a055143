"""placement._best_option (the window chooser every placement pass calls) on real calls.

1. ``--capture DIR``: plans the bundled example (``greencpn plan``) and keeps a random 15 % of
   its ``_best_option`` calls (arguments pickled into DIR/calls.pkl, ~600 MB; the demo makes
   ~44,000 calls).
2. ``--time DIR``: times the ``_best_option`` importable from ``PYTHONPATH`` on those calls
   (two rounds) and writes every result to DIR/results-<tag>.pkl; with ``--against TAG`` it
   checks the results are identical to an earlier run's.

Side by side: capture once, then run ``--time`` with PYTHONPATH at an old ``git archive``
copy (``--tag old``) and at this tree (``--tag new --against old``), one after the other.
"""

from __future__ import annotations

import argparse
import os
import pickle
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def capture(out: Path) -> None:
    import greencpn.optimize.improve as im
    import greencpn.optimize.placement as pl
    from greencpn.cli import main

    orig = pl._best_option
    calls: list[dict] = []
    rnd = random.Random(1)

    def wrap(**kw):
        if rnd.random() < 0.15:
            calls.append(kw)
        return orig(**kw)

    pl._best_option = wrap
    im._best_option = wrap
    out.mkdir(parents=True, exist_ok=True)
    main(["plan", "--config", str(ROOT / "data/example/fleet.toml"), "--out", str(out / "plan")])
    with open(out / "calls.pkl", "wb") as fh:
        pickle.dump(calls, fh)
    print(f"captured {len(calls)} calls into {out / 'calls.pkl'}")


def _same(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return len(a) == len(b) and all(
        np.asarray(x).shape == np.asarray(y).shape and np.array_equal(x, y)
        for x, y in zip(a, b, strict=True)
    )


def time_calls(d: Path, tag: str, against: str | None) -> None:
    from greencpn.optimize import placement

    with open(d / "calls.pkl", "rb") as fh:
        calls = pickle.load(fh)
    f = placement._best_option
    rounds = []
    for _ in range(2):
        t0, c0 = time.perf_counter(), time.process_time()
        results = [f(**kw) for kw in calls]
        rounds.append((time.perf_counter() - t0, time.process_time() - c0))
    with open(d / f"results-{tag}.pkl", "wb") as fh:
        pickle.dump(results, fh)
    line = (
        f"{tag} ({placement.__file__}): {len(calls)} calls, "
        + ", ".join(f"{w:.2f} s wall / {c:.2f} s CPU" for w, c in rounds)
        + f", load average {os.getloadavg()[0]:.1f}"
    )
    if against:
        with open(d / f"results-{against}.pkl", "rb") as fh:
            ref = pickle.load(fh)
        diff = sum(not _same(a, b) for a, b in zip(ref, results, strict=True))
        line += f"; results differing from {against}: {diff}"
    print(line)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--capture", type=Path)
    ap.add_argument("--time", type=Path)
    ap.add_argument("--tag", default="new")
    ap.add_argument("--against")
    a = ap.parse_args()
    if a.capture:
        capture(a.capture)
    if a.time:
        time_calls(a.time, a.tag, a.against)
    if not (a.capture or a.time):
        ap.error("give --capture DIR and/or --time DIR")
        sys.exit(2)
