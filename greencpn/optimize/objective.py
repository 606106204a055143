"""Family 7 — the objective: carbon of all energy + cost + lateness (+ penalised slacks).

    min  Σ_{s,t} ( w_c · I[s,t] / 1000 + w_$ · price[s,t] ) · e[s,t]          carbon (kg) + cost
       + Σ_{k,s,t>D_k} λ_late · prio_k · (t − D_k)·Δ · x[k,s,t]                lateness
       + λ_unserved · Σ_k q[k]  +  λ_budget · Σ_{s,t} v[s,t]                    slacks

I[s,t] (g/kWh) and the weights w_c, w_$ are mutable Pyomo Params: re-planning with a new
forecast, or sweeping the carbon/cost trade-off, changes them on the built model and re-solves
on the same persistent solver, skipping the rebuild and the handoff.
"""

from __future__ import annotations

import numpy as np
import pyomo.environ as pyo
from pyomo.core.expr.numeric_expr import LinearExpression

from greencpn.optimize.builder import ModelBuilder
from greencpn.optimize.completion import late_hours
from greencpn.optimize.inputs import PlanInputs
from greencpn.optimize.variables import Vars

#: objective units per kWh of budget overrun: above any lateness or unserved penalty per kWh,
#: so a budget is only broken when nothing else can hold it (and the plan reports it).
BUDGET_OVERRUN_WEIGHT_PER_KWH = 1.0e5


def add(mb: ModelBuilder, inp: PlanInputs, V: Vars) -> None:
    m = mb.m
    S, T = len(inp.sites), inp.T
    obj = inp.objective
    m.w_carbon = pyo.Param(initialize=obj.carbon_weight_per_kg, mutable=True)
    m.w_cost = pyo.Param(initialize=obj.cost_weight, mutable=True)
    inten = np.array([s.planning_intensity for s in inp.sites]).reshape(S * T)
    m.intensity = pyo.Param(range(S * T), initialize=dict(enumerate(inten.tolist())), mutable=True)
    price = np.array([s.price_per_kwh for s in inp.sites]).reshape(S * T)
    allv = mb.vars
    coefs: list = []
    vars_: list = []
    e_flat = V.e.reshape(S * T)
    for i in range(S * T):
        coefs.append(m.w_carbon * m.intensity[i] / 1000.0 + m.w_cost * float(price[i]))
        vars_.append(allv[int(e_flat[i])])
    late = late_hours(inp, V)
    prio = np.array([g.priority for g in inp.groups])
    for xi in np.nonzero(late > 0)[0]:
        coefs.append(obj.lateness_weight_per_gpu_h * float(prio[V.x_k[xi]]) * float(late[xi]))
        vars_.append(allv[int(V.x_id[xi])])
    for k in range(len(inp.groups)):
        coefs.append(obj.unserved_weight_per_gpu_h)
        vars_.append(allv[int(V.q[k])])
    for i in V.v.ravel().tolist():
        coefs.append(BUDGET_OVERRUN_WEIGHT_PER_KWH)
        vars_.append(allv[int(i)])
    m.objective = pyo.Objective(
        expr=LinearExpression(constant=0, linear_coefs=coefs, linear_vars=vars_), sense=pyo.minimize
    )


def set_intensity(m: pyo.ConcreteModel, inp: PlanInputs) -> None:
    """Copy the inputs' intensities into the model's mutable Params."""
    S, T = len(inp.sites), inp.T
    inten = np.array([s.planning_intensity for s in inp.sites]).reshape(S * T).tolist()
    for i, val in enumerate(inten):
        m.intensity[i] = val
