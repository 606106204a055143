"""Checks run on the numeric inputs before the model is built (PyPSA ``consistency.py`` style).

Hard input errors are refused earlier, by :mod:`greencpn.config`. These checks find what the
model can survive but the user should know — each returns messages naming the family and the job
or site, which the plan reports and which explain an infeasible or penalised outcome:

* ``deadline``: a job that cannot finish by its deadline even alone at full power;
* ``budget``: a site whose spares alone exceed its power budget in some slot;
* ``nodes``: initial state below the spares (start-ups are forced in slot 0).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from greencpn.optimize.inputs import PlanInputs


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_deadlines(inp: PlanInputs) -> list[str]:
    out = []
    for j in inp.jobs:
        if j.deadline_slot >= inp.T or j.required_gpu_h <= 0:
            continue
        if j.deadline <= inp.start:  # entirely before the horizon: overdue, not too short
            late_h = (inp.start - j.deadline).total_seconds() / 3600.0
            out.append(
                f"deadline: job {j.id} was due {_iso(j.deadline)}, {late_h:.2f} h before the "
                f"horizon starts ({_iso(inp.start)}): it is already overdue and is planned as "
                "late work — remove it from the jobs if it ran, or give it a new deadline"
            )
            continue
        need_h = j.work_gpu_h / j.gpus
        opens = max(j.release, inp.start)
        have_h = max(0.0, (j.deadline - opens).total_seconds() / 3600.0)
        if need_h > have_h + 1e-9:
            out.append(
                f"deadline: job {j.id} needs at least {need_h:.2f} h on {j.gpus} GPU(s) but has "
                f"{have_h:.2f} h between its release and deadline: it will be late"
            )
    return out


def check_budgets(inp: PlanInputs) -> list[str]:
    out = []
    for s, site in enumerate(inp.sites):
        floor_kw = site.pue * sum(
            p.spares * p.node_idle_kw + (p.nodes - p.spares) * p.node_off_kw
            for p in inp.pools
            if p.site == s
        )
        bad = [
            t
            for t in range(inp.T)
            if math.isfinite(site.budget_kw[t]) and floor_kw > site.budget_kw[t]
        ]
        if bad:
            out.append(
                f"budget: site {site.name} draws {floor_kw:.1f} kW with only its spares on, above its "
                f"budget in {len(bad)} slot(s) (first slot {bad[0]}): raise the budget or lower spares"
            )
    return out


def check_nodes(inp: PlanInputs) -> list[str]:
    return [
        f"nodes: pool {p.name} starts with {p.initial_on} nodes on, below its {p.spares} spares: "
        f"{p.spares - p.initial_on} start-up(s) are forced in the first slot"
        for p in inp.pools
        if p.initial_on < p.spares
    ]


CHECKS = (check_deadlines, check_budgets, check_nodes)


def run_checks(inp: PlanInputs) -> list[str]:
    out: list[str] = []
    for check in CHECKS:
        out.extend(check(inp))
    return out
