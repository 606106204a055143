"""Family 1 — work completion, with lateness and unserved work as penalised slacks.

For group k with required work W_k (GPU-h at full power), release slot r_k and deadline slot
D_k (the last slot that ends by the deadline):

    Σ_{s∈S_k} Σ_{t≥r_k} x[k,s,t] + q[k] = W_k                        ∀k

Work done after D_k is allowed but charged in the objective at λ_late · priority_k · (t − D_k) · Δ
per GPU-h (the hours it finishes late), and q[k] — work that does not fit inside the horizon at
all — at λ_unserved per GPU-h. An impossible deadline therefore yields a plan that says which
job is late and by how much, never a bare "infeasible".
"""

from __future__ import annotations

from collections import defaultdict

from greencpn.optimize.builder import ModelBuilder
from greencpn.optimize.inputs import PlanInputs
from greencpn.optimize.variables import Vars


def add(mb: ModelBuilder, inp: PlanInputs, V: Vars) -> None:
    by_k: dict[int, list[int]] = defaultdict(list)
    for i, k in enumerate(V.x_k.tolist()):
        by_k[k].append(int(V.x_id[i]))
    for k, grp in enumerate(inp.groups):
        ids = [*by_k.get(k, []), int(V.q[k])]
        mb.add_row("completion", ids, [1.0] * len(ids), grp.required_gpu_h, grp.required_gpu_h)


def late_hours(inp: PlanInputs, V: Vars):
    """Hours late of work done in each work variable's slot (0 when on time)."""
    import numpy as np

    dl = np.array([g.deadline_slot for g in inp.groups])
    beyond = np.array([g.key[5] for g in inp.groups], dtype=bool)
    if V.x_k.size == 0:
        return np.zeros(0)
    late = np.maximum(0, V.x_t - dl[V.x_k]) * inp.slot_h
    late[beyond[V.x_k]] = 0.0
    return late
