"""The report's tables: plan vs baselines, per site, per pool, late jobs and the carbon/cost
trade-off."""

from __future__ import annotations

from typing import Any

from greencpn.report.elements import (
    BASELINES,
    METRICS,
    Table,
    _range,
    _sum,
    currency_label,
    fmt_num,
    pct_diff,
)


def comparison_table(plan: dict[str, Any]) -> Table:
    totals = plan["totals"]
    base = plan.get("baselines") or {}
    header = ["", "plan"]
    for _, label in BASELINES:
        header += [label, f"plan vs {label}"]
    rows = []
    for label, key, dec in METRICS:
        if key not in totals and not any(key in (base.get(b) or {}) for b, _ in BASELINES):
            continue
        if key == "cost":
            label = f"Cost ({currency_label(plan)})"
        row = [label, fmt_num(totals.get(key), dec)]
        for bkey, _ in BASELINES:
            bval = (base.get(bkey) or {}).get(key)
            row += [fmt_num(bval, dec), pct_diff(totals.get(key), bval)]
        rows.append(row)
    return Table(header, rows, [False] + [True] * (len(header) - 1))


def site_table(plan: dict[str, Any]) -> Table:
    jobs_at: dict[str, int] = {}
    for j in plan.get("jobs") or []:
        if j.get("site"):
            jobs_at[j["site"]] = jobs_at.get(j["site"], 0) + 1
    rows = []
    for s in plan["sites"]:
        slots = s.get("slots") or []
        energy = _sum(slots, "energy_kwh")
        carbon = _sum(slots, "carbon_kg")
        meter = [float(x.get("meter_power_kw") or 0.0) for x in slots]
        budgets = [float(x["budget_kw"]) for x in slots if x.get("budget_kw") is not None]
        ints = [
            float(x["intensity_g_per_kwh"])
            for x in slots
            if x.get("intensity_g_per_kwh") is not None
        ]
        at_budget = over_budget = 0
        for x in slots:
            if x.get("budget_kw") is None:
                continue
            b, m = float(x["budget_kw"]), float(x.get("meter_power_kw") or 0.0)
            if m > b * (1 + 1e-3):
                over_budget += 1
            elif m >= b * (1 - 1e-3):
                at_budget += 1
        rows.append(
            [
                f"{s['name']} ({s.get('zone', '?')})",
                str(jobs_at.get(s["name"], 0)),
                fmt_num(energy),
                fmt_num(carbon),
                fmt_num(_sum(slots, "cost"), 2),
                fmt_num(1000.0 * carbon / energy if energy else None, 0),
                _range(ints),
                fmt_num(max(meter) if meter else None),
                fmt_num(min(budgets) if budgets else None),
                str(at_budget) if budgets else "–",
                str(over_budget) if budgets else "–",
            ]
        )
    header = [
        "site",
        "jobs",
        "energy (kWh)",
        "carbon (kg)",
        "cost",
        "avg intensity of its energy (g/kWh)",
        "grid intensity range (g/kWh)",
        "peak meter (kW)",
        "lowest budget (kW)",
        "slots at budget",
        "slots over budget",
    ]
    return Table(header, rows, [False] + [True] * (len(header) - 1))


def pool_table(plan: dict[str, Any]) -> Table:
    slot_h = float(plan["horizon"]["slot_minutes"]) / 60.0
    rows = []
    for p in plan["pools"]:
        slots = p.get("slots") or []
        on = [float(x.get("nodes_on") or 0) for x in slots]
        busy = _sum(slots, "busy_gpus")
        caps = [
            float(x["power_cap_w"])
            for x in slots
            if x.get("power_cap_w") is not None and float(x.get("busy_gpus") or 0) > 0
        ]
        gpus_on = sum(o * int(p.get("gpus_per_node", 1)) for o in on)
        rows.append(
            [
                p["name"],
                p.get("site", "?"),
                f"{p.get('nodes', '?')} × {p.get('gpus_per_node', '?')} {p.get('gpu_model', '')}",
                fmt_num(sum(on) / len(on) if on else None, 1),
                _range(on),
                str(int(_sum(slots, "startups"))),
                fmt_num(busy * slot_h, 1),
                (f"{100.0 * busy / gpus_on:.0f} %" if gpus_on else "–"),
                _range(caps),
            ]
        )
    header = [
        "pool",
        "site",
        "nodes × GPUs",
        "avg nodes on",
        "nodes on (min–max)",
        "startups",
        "busy GPU-h",
        "busy share of GPUs on",
        "cap when busy (W)",
    ]
    return Table(header, rows, [False, False, False] + [True] * 6)


def late_table(plan: dict[str, Any], limit: int = 50) -> tuple[Table | None, int]:
    bad = [
        j
        for j in plan.get("jobs") or []
        if float(j.get("late_h") or 0) > 0
        or float(j.get("unserved_gpu_h") or 0) > 0
        or j.get("start") is None
    ]
    if not bad:
        return None, 0
    bad.sort(key=lambda j: (-(float(j.get("unserved_gpu_h") or 0)), -(float(j.get("late_h") or 0))))
    rows = [
        [
            str(j["id"]),
            str(j.get("site") or "–"),
            str(j.get("pool") or "–"),
            str(j.get("gpus", "?")),
            fmt_num(j.get("work_gpu_h")),
            str(j.get("deadline") or "–"),
            str(j.get("end") or "not placed"),
            fmt_num(j.get("late_h"), 2),
            fmt_num(j.get("unserved_gpu_h"), 1),
        ]
        for j in bad[:limit]
    ]
    header = [
        "job",
        "site",
        "pool",
        "GPUs",
        "work (GPU-h)",
        "deadline",
        "end",
        "late (h)",
        "unserved (GPU-h)",
    ]
    return Table(header, rows, [False] * 3 + [True] * 2 + [False] * 2 + [True] * 2), len(bad)


def tradeoff_table(plan: dict[str, Any]) -> Table | None:
    pts = plan.get("tradeoff") or []
    if not pts:
        return None
    rows = [
        [
            fmt_num(p.get("carbon_weight_per_kg"), 3),
            fmt_num(p.get("cost_weight"), 3),
            fmt_num(p.get("carbon_kg")),
            fmt_num(p.get("cost"), 2),
            (
                f"configured weights: the executed plan emits "
                f"{fmt_num((plan.get('totals') or {}).get('carbon_kg'))} kg"
                if p.get("status") == "configured"
                else str(p.get("status") or "")
            ),
        ]
        for p in pts
    ]
    return Table(
        ["carbon weight (per kg)", "cost weight", "MILP carbon (kg)", "MILP cost", "note"],
        rows,
        [True] * 4 + [False],
    )
