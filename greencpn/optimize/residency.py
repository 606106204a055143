"""Family 6 — data residency and latency.

A job may run at site ``s`` only if one of the site's jurisdiction tags is among the job's
allowed jurisdictions (empty = anywhere) and the site's latency to the job's user region is at
most the job's limit (:func:`greencpn.config.allowed_sites`). The rule is enforced by
construction rather than by rows: work variables exist only on allowed sites,

    x[k,s,t] defined  ⇔  s ∈ S_k  and  r_k ≤ t ≤ D_k + max_late_slots,

so a violation cannot even be expressed. :func:`check_residency` re-checks a finished plan.
"""

from __future__ import annotations

import numpy as np

from greencpn.optimize.inputs import PlanInputs


def work_index(inp: PlanInputs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(k, s, t) of every work variable: residency and latency are enforced by construction —
    a group gets variables only at its allowed sites and from its release slot on."""
    ks, ss, ts = [], [], []
    T = inp.T
    late = inp.solver.max_late_slots
    for k, grp in enumerate(inp.groups):
        beyond = grp.key[5]
        last = T if beyond else min(T, max(grp.deadline_slot, grp.release_slot) + 1 + late)
        span = np.arange(grp.release_slot, last)
        for s in grp.sites:
            ks.append(np.full(span.size, k))
            ss.append(np.full(span.size, s))
            ts.append(span)
    if not ks:
        empty = np.zeros(0, dtype=int)
        return empty, empty, empty
    return np.concatenate(ks), np.concatenate(ss), np.concatenate(ts)


def check_residency(inp: PlanInputs, job_sites: dict[str, int | None]) -> list[str]:
    """Jobs placed at a site they may not use (should be empty)."""
    bad = []
    for j in inp.jobs:
        s = job_sites.get(j.id)
        if s is not None and s not in j.sites:
            bad.append(
                f"job {j.id} placed at {inp.sites[s].name}, allowed {[inp.sites[i].name for i in j.sites]}"
            )
    return bad
