"""Per-job caps chosen by greencpn.optimize.jobcaps.choose_level on the Zeus configurations
(issue #14.3): the share of the per-configuration ≤ 3 % slowdown saving they keep.

    .venv/bin/python bench/bench_job_caps.py

Each configuration is one job (1 GPU-h of work at the top cap, 1 GPU, flat carbon). The chooser
sees a curve and a deadline; the saving and slowdown are then read from the configuration's own
measurements. Curves: 'class' = its workload class's curve fitted without it (leave-one-out,
what the planner knows from the bundled profiles); 'own' = its own measured curve (what a
profile learned from this recurring job's ledger history gives). Deadlines: 'tight' = 1.03 ×
its uncapped duration; 'slack' = 2 ×. Deterministic: no timing.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from greencpn.gpumodels import fit, share  # noqa: E402
from greencpn.gpumodels.devices import DEVICES  # noqa: E402
from greencpn.optimize.jobcaps import choose_level  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "gpu"


def _choose(theta: list[float], prel: list[float], deadline: float) -> int:
    return choose_level(
        work_gpu_h=1.0,
        gpus=1,
        throughput=theta,
        busy_extra_kw=prel,
        start_h=0.0,
        end_limit_h=deadline,
        intensity_g_per_kwh=[500.0],
        slot_h=1000.0,
    ).level


def main() -> int:
    if not DATA.is_dir():
        print(f"skipped: shared GPU sweep data not found at {DATA}", file=sys.stderr)
        return 0
    print(
        "| GPU | configs | per-config ≤3 % limit, mean saving | tight, class curve: share "
        "(slowed > 3 %) | tight, own curve: share (slowed > 3 %) | slack 2×, own curve: mean "
        "saving (÷ limit) |"
    )
    print("|---|---|---|---|---|---|")
    for d in DEVICES:
        if d.sweep is None:
            continue
        cfgs = list(fit.read_sweep(DATA / f"summary_power_{d.sweep}.csv").values())
        levels = fit.fit_device(cfgs, d.power_limit_max_w).levels
        top = max(levels)
        cfgs = [c for c in cfgs if all(p in c for p in levels)]
        classes = [fit.classify(c[top][1], d.power_limit_max_w) for c in cfgs]
        lim = sum(share.limit(c, levels, top) for c in cfgs)
        res: dict[str, list[float]] = {"class": [0.0, 0], "own": [0.0, 0], "slack": [0.0, 0]}
        for i, c in enumerate(cfgs):
            own_t = [c[top][0] / c[p][0] for p in levels]
            own_p = [c[p][1] / c[top][1] for p in levels]
            peers = [x for j, x in enumerate(cfgs) if j != i and classes[j] == classes[i]]
            cf = fit.fit_levels(peers, d.power_limit_max_w) if peers else None
            for key, curve, dl in (
                ("own", (own_t, own_p), 1.03),
                ("slack", (own_t, own_p), 2.0),
                (
                    "class",
                    (
                        [cf.per_limit[p].throughput for p in levels],
                        [cf.per_limit[p].model_e_rel * cf.per_limit[p].throughput for p in levels],
                    )
                    if cf
                    else ([1.0 if p == top else 0.5 for p in levels], [1.0] * len(levels)),
                    1.03,
                ),
            ):
                cap = levels[_choose(curve[0], curve[1], dl)]
                res[key][0] += share.saving(c, cap, top)
                res[key][1] += c[top][0] / c[cap][0] < 1.0 - share.SLOWDOWN_LIMIT - 1e-12
        n = len(cfgs)
        print(
            f"| {d.name} | {n} | {lim / n:.3f} | {res['class'][0] / lim:.2f} ({res['class'][1]:.0f}) | "
            f"{res['own'][0] / lim:.2f} ({res['own'][1]:.0f}) | {res['slack'][0] / n:.3f} "
            f"({res['slack'][0] / lim:.2f}) |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
