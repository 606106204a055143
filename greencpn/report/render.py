"""Render a plan (``greencpn.plan/1`` dict) into ``report.md``, a self-contained ``report.html``
and PNG plots.

The report is built once as a list of neutral blocks (headings, paragraphs, tables, images)
and then written twice, as Markdown and as HTML, so both always say the same thing. The
HTML embeds every plot as a ``data:image/png;base64`` URI and its CSS inline: it opens
offline as one file. A small inline script sets ``data-images-loaded`` on ``<body>`` to the
number of images that decoded (``naturalWidth > 0``); the headless-browser test reads it.

Usage::

    from greencpn.report.render import render_report
    paths = render_report(plan_dict, Path("out"))   # {"md": ..., "html": ..., "carbon_load.png": ...}
"""

from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from greencpn.errors import ConfigError
from greencpn.report.plots import PLOTS, make_plots

SCHEMA_PREFIX = "greencpn.plan/1"

# rows of the comparison table: (label, key in totals/baselines, decimals)
METRICS: list[tuple[str, str, int]] = [
    ("Energy (kWh)", "energy_kwh", 1),
    ("Carbon (kg CO2e)", "carbon_kg", 1),
    ("Cost", "cost", 2),
    ("Late jobs", "late_jobs", 0),
    ("Late work (GPU-h)", "late_gpu_h", 1),
    ("Unserved work (GPU-h)", "unserved_gpu_h", 1),
]
BASELINES = [
    ("carbon_agnostic", "carbon-agnostic"),
    ("shutdown_idle", "shutdown-idle"),
    ("carbon_aware_greedy", "carbon-aware greedy"),
]


# ----------------------------------------------------------------------------- formatting


def fmt_num(value: Any, decimals: int = 1) -> str:
    """A number with thousands separators and fixed decimals; '–' when missing."""
    if value is None:
        return "–"
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(x):
        return "–"
    if math.isinf(x):
        return "∞"
    return f"{x:,.{decimals}f}"


def pct_diff(plan_value: Any, base_value: Any) -> str:
    """(plan − baseline) / baseline in percent, signed; '–' when undefined."""
    try:
        p, b = float(plan_value), float(base_value)
    except (TypeError, ValueError):
        return "–"
    if b == 0:
        return "±0.0 %" if p == 0 else "–"
    d = 100.0 * (p - b) / abs(b)
    return f"{d:+.1f} %"


def _range(values: list[float], decimals: int = 0) -> str:
    """'lo–hi', or one value when they are equal, or '–' when empty."""
    if not values:
        return "–"
    lo, hi = fmt_num(min(values), decimals), fmt_num(max(values), decimals)
    return lo if lo == hi else f"{lo}–{hi}"


def _seconds(v: Any) -> str:
    return "–" if v is None else f"{float(v):.2f} s"


# ----------------------------------------------------------------------------- blocks


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    numeric: list[bool] = field(default_factory=list)  # right-align these columns


@dataclass
class Image:
    file: str
    alt: str


Block = tuple[str, Any]  # ("h1" | "h2" | "p" | "ul" | "table" | "img", payload)


def _check_plan(plan: Any) -> None:
    if not isinstance(plan, dict):
        raise ConfigError(
            "the plan is not a JSON object", source="plan", fix="pass the dict read from plan.json"
        )
    schema = str(plan.get("schema", ""))
    if not schema.startswith(SCHEMA_PREFIX):
        raise ConfigError(
            f"unsupported plan schema {schema!r}",
            source="plan",
            field="schema",
            fix=f"render a plan written by this greencpn version ({SCHEMA_PREFIX})",
        )
    for key in ("horizon", "pools", "sites", "totals"):
        if key not in plan:
            raise ConfigError(
                f"the plan has no {key!r}",
                source="plan",
                field=key,
                fix="re-run greencpn plan to write a complete plan.json",
            )


def _sum(slots: list[dict[str, Any]], key: str) -> float:
    return sum(float(s.get(key) or 0.0) for s in slots)


def headline(plan: dict[str, Any]) -> str:
    """One sentence: the plan's carbon and its saving against each baseline."""
    totals = plan["totals"]
    base = plan.get("baselines") or {}
    carbon = totals.get("carbon_kg")
    parts = [f"The plan emits **{fmt_num(carbon)} kg CO2e** over the horizon"]
    for key, label in BASELINES:
        b = base.get(key)
        if not b or b.get("carbon_kg") is None or carbon is None:
            continue
        saved = float(b["carbon_kg"]) - float(carbon)
        pct = 100.0 * saved / float(b["carbon_kg"]) if b["carbon_kg"] else 0.0
        word = "less" if saved >= 0 else "more"
        parts.append(
            f"{fmt_num(abs(saved))} kg ({abs(pct):.1f} %) {word} than the {label} baseline"
        )
    text = parts[0] + (": " + "; ".join(parts[1:]) if len(parts) > 1 else "") + "."
    late = totals.get("late_jobs") or 0
    unserved = float(totals.get("unserved_gpu_h") or 0.0)
    if late or unserved:
        text += (
            f" {int(late)} job(s) finish late ({fmt_num(totals.get('late_gpu_h'))} GPU-h"
            f" late) and {fmt_num(unserved)} GPU-h cannot be served in the horizon."
        )
    else:
        text += " Every job meets its deadline."
    return text


def currency_label(plan: dict[str, Any]) -> str:
    cur = plan.get("currency")
    return str(cur) if cur else "currency not stated"


def extra_blocks(plan: dict[str, Any]) -> list[Block]:
    """Where the saving comes from and what the plan asks of the fleet (issue #10.13)."""
    blocks: list[Block] = []
    lev = plan.get("lever_savings")
    if lev:
        rows = [
            [
                str(r["label"]),
                fmt_num(r["carbon_kg_with_lever_undone"]),
                fmt_num(r["saving_kg"]),
                "–" if r.get("share_of_saving") is None else f"{100 * r['share_of_saving']:.0f} %",
            ]
            for r in lev["levers"]
        ]
        rows.append(
            [
                "interaction (saving − sum of the rows above)",
                "–",
                fmt_num(lev["interaction_kg"]),
                "–",
            ]
        )
        blocks += [
            ("h2", "Saving by lever"),
            (
                "p",
                f"The plan emits {fmt_num(lev['plan_carbon_kg_in_horizon'])} kg inside the horizon, "
                f"the carbon-agnostic baseline {fmt_num(lev['carbon_agnostic_carbon_kg_in_horizon'])} kg "
                f"(saving {fmt_num(lev['saving_kg'])} kg). Each row undoes one lever on the executed "
                "plan and re-prices it (capacity and budgets are not re-checked): *shifting in "
                "time* starts every job at its release, *moving between sites* runs it at its "
                "submit site, *sleeping nodes* keeps every node on, *power caps* runs at full "
                "power. Share = the row's saving / the saving against carbon-agnostic.",
            ),
            (
                "table",
                Table(
                    [
                        "lever undone",
                        "carbon with it undone (kg)",
                        "saving it brings (kg)",
                        "share",
                    ],
                    rows,
                    [False, True, True, True],
                ),
            ),
        ]
    eb = plan.get("energy_breakdown_kwh")
    if eb and "plan" in eb:
        parts = [
            ("GPU busy (above idle)", "gpu_busy"),
            ("node idle (nodes on)", "node_idle"),
            ("nodes off (standby)", "node_off"),
            ("boot", "boot"),
            ("PUE overhead", "pue_overhead"),
        ]
        cols = [
            k
            for k in ("plan", "carbon_agnostic", "shutdown_idle", "carbon_aware_greedy")
            if k in eb
        ]
        rows = [[label] + [fmt_num(eb[c].get(key)) for c in cols] for label, key in parts]
        rows.append(
            ["total (inside the horizon)"]
            + [fmt_num(eb[c].get("it_total", 0.0) + eb[c].get("pue_overhead", 0.0)) for c in cols]
        )
        blocks += [
            ("h2", "Energy breakdown (kWh)"),
            (
                "p",
                "Meter energy inside the horizon by what draws it (IT terms plus the PUE overhead).",
            ),
            (
                "table",
                Table(
                    ["", *(c.replace("_", "-") for c in cols)], rows, [False] + [True] * len(cols)
                ),
            ),
        ]
    jobs = [j for j in plan.get("jobs") or [] if j.get("delay_h") is not None]
    if jobs:
        delays = sorted(float(j["delay_h"]) for j in jobs)
        top = sorted(jobs, key=lambda j: -float(j["delay_h"]))[:20]
        mid = delays[len(delays) // 2]
        blocks += [
            ("h2", "Job delay (start − release)"),
            (
                "p",
                f"{len(jobs)} placed job(s): median delay {fmt_num(mid, 2)} h, largest "
                f"{fmt_num(delays[-1], 2)} h, {sum(1 for d in delays if d > 1e-9)} delayed at all. "
                f"The {len(top)} most delayed:",
            ),
            (
                "table",
                Table(
                    [
                        "delayed job",
                        "site",
                        "release",
                        "start",
                        "delay (h)",
                        "deadline",
                        "late (h)",
                    ],
                    [
                        [
                            str(j["id"]),
                            str(j.get("site") or "–"),
                            str(j.get("release")),
                            str(j.get("start")),
                            fmt_num(j.get("delay_h"), 2),
                            str(j.get("deadline")),
                            fmt_num(j.get("late_h"), 2),
                        ]
                        for j in top
                    ],
                    [False] * 4 + [True, False, True],
                ),
            ),
        ]
    res = plan.get("residency")
    if res:
        blocks += [
            ("h2", "Data residency placements"),
            ("p", f"{len(res)} job(s) carry jurisdictions; each ran only where they allow:"),
            (
                "table",
                Table(
                    [
                        "job with residency",
                        "jurisdictions",
                        "allowed sites",
                        "placed at",
                        "site jurisdictions",
                    ],
                    [
                        [
                            str(r["job"]),
                            ", ".join(r["jurisdictions"]),
                            ", ".join(r["allowed_sites"]),
                            str(r.get("site") or "not placed"),
                            ", ".join(r.get("site_jurisdictions") or []),
                        ]
                        for r in res[:50]
                    ],
                ),
            ),
        ]
    return blocks


def actuation_warning(plan: dict[str, Any]) -> list[Block]:
    bad = plan.get("not_actuated") or []
    if not bad:
        return []
    return [
        (
            "p",
            "**Warning: greencpn cannot actuate "
            + f"{len(bad)} pool(s)** — "
            + "; ".join(f"{b['pool']}: {b['reason']}" for b in bad)
            + ".",
        )
    ]


def _submit_rule_text(plan: dict[str, Any]) -> str:
    """Which rule gave each job's submit site (plan.json ``baseline_rules``)."""
    sub = (plan.get("baseline_rules") or {}).get("submit_site") or {}
    if not sub:
        return ""
    counts = ", ".join(f"{n} job(s) by {rule}" for rule, n in sub.get("jobs_by_rule", {}).items())
    return (
        f" (submit site: {counts}; the rule: {sub.get('rule', '')}; the TOML's order of "
        "sites plays no part)"
    )


def signal_blocks(plan: dict[str, Any]) -> list[Block]:
    """The carbon signal the plan decided on per site, and the saving on measured values."""
    sig = plan.get("carbon_signal") or {}
    if not sig:
        return []
    rows = [
        [
            name,
            str(v.get("zone") or "–"),
            str(v.get("kind") or "–"),
            str(v.get("source") or "–"),
            str(v.get("signal") or "–"),
            str(v.get("accounting") or "not stated"),
        ]
        for name, v in (sig.get("sites") or {}).items()
    ]
    text = f"**Carbon signal: {sig.get('summary', '')}.**"
    if sig.get("perfect_forecast"):
        text += (
            " Perfect forecast: a real deployment decides on forecasts, so expect a smaller "
            "saving; `[carbon] actuals_file` prices a forecast-based plan on measured values."
        )
    blocks: list[Block] = [
        ("h2", "Carbon signal"),
        ("p", text),
        (
            "table",
            Table(
                ["carbon signal of site", "zone", "values", "source", "signal", "accounting"], rows
            ),
        ),
    ]
    act = plan.get("on_actuals")
    if act:
        sv = act.get("savings") or {}
        arows = [["plan", fmt_num(act["totals"].get("carbon_kg")), "–"]]
        for key, label in BASELINES:
            b = (act.get("baselines") or {}).get(key)
            if b:
                arows.append(
                    [
                        label,
                        fmt_num(b.get("carbon_kg")),
                        f"{fmt_num(sv.get(f'carbon_kg_vs_{key}'))} kg "
                        f"({float(sv.get(f'carbon_pct_vs_{key}', 0.0)):.1f} %)",
                    ]
                )
        blocks += [
            (
                "p",
                f"Priced on actuals (`{act.get('source', '')}`): the same schedules, evaluated on "
                "the measured intensities.",
            ),
            (
                "table",
                Table(["", "carbon on actuals (kg)", "plan saves"], arows, [False, True, True]),
            ),
        ]
    return blocks


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


def solver_blocks(plan: dict[str, Any]) -> list[Block]:
    sv = plan.get("solver") or {}
    ex = plan.get("executed") or {}
    if not sv and not ex:
        return []
    gap = sv.get("mip_gap")
    rows = [
        ["status", str(sv.get("status", "–"))],
        ["termination", str(sv.get("termination", "–"))],
        ["objective (MILP)", fmt_num(sv.get("objective"), 3)],
        ["best bound", fmt_num(sv.get("bound"), 3)],
        ["MIP gap", "–" if gap is None else f"{100 * float(gap):.3f} %"],
        ["executed objective (job-level plan)", fmt_num(ex.get("objective"), 3)],
        *(
            [
                [
                    "MILP objective / bound behind the executed plan",
                    f"{fmt_num(ex.get('milp_objective'), 3)} / {fmt_num(ex.get('milp_bound'), 3)}",
                ]
            ]
            if "milp_objective" in ex or "milp_bound" in ex
            else []
        ),
        [
            "executed gap to bound",
            "–" if ex.get("gap_to_bound") is None else f"{100 * float(ex['gap_to_bound']):.3f} %",
        ],
        [
            "time: build / handoff / solve",
            " / ".join(_seconds(sv.get(k)) for k in ("build_s", "handoff_s", "solve_s")),
        ],
        [
            "time: extract / placement",
            " / ".join(_seconds(sv.get(k)) for k in ("extract_s", "placement_s")),
        ],
        [
            "model size",
            f"{fmt_num(sv.get('n_vars'), 0)} variables, "
            f"{fmt_num(sv.get('n_constraints'), 0)} constraints, "
            f"{fmt_num(sv.get('n_job_groups'), 0)} job groups",
        ],
    ]
    blocks: list[Block] = [("h2", "Solver outcome"), ("table", Table(["", "value"], rows))]
    if sv.get("incumbent_used_on_time_limit"):
        blocks.append(
            (
                "p",
                "**Warning:** the solver hit its time limit; the best plan found so "
                "far (the incumbent) is used. Its distance to the bound is the gap above.",
            )
        )
    if sv.get("status") in {"infeasible", "error"}:
        blocks.append(
            ("p", f"**The solver found no plan** ({sv.get('status')}): {sv.get('termination', '')}")
        )
    return blocks


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


def build_blocks(plan: dict[str, Any], plot_files: list[str]) -> list[Block]:
    """The whole report as neutral blocks (see module docstring)."""
    hz = plan["horizon"]
    title = f"greencpn plan report — {plan.get('fleet', 'fleet')}"
    n_jobs = len(plan.get("jobs") or [])
    intro = (
        f"Horizon {hz.get('slots', '?')} × {hz.get('slot_minutes', '?')} min from "
        f"{hz.get('start', '?')} (UTC); {len(plan['sites'])} site(s), {len(plan['pools'])} pool(s), "
        f"{n_jobs} job(s). Plan computed at {plan.get('created_at', '?')} from "
        f"`{plan.get('config', '?')}`."
    )
    weights = plan.get("objective_weights") or {}
    if weights:
        intro += (
            " Objective weights: "
            + ", ".join(
                f"{k} = {v:g}" if isinstance(v, int | float) else f"{k} = {v}"
                for k, v in weights.items()
            )
            + "."
        )
    blocks: list[Block] = [("h1", title), ("p", headline(plan))]
    if plan.get("origin") == "safe":
        sf = plan.get("safe_fallback") or {}
        blocks.append(
            (
                "p",
                f"**SAFE PLAN — not an optimised plan.** {sf.get('reason', 'No incumbent')}; "
                f"the plan is the safe plan: {sf.get('rule', '')}. Re-run with a longer "
                "`--time-limit` (or `solver.time_limit_s`) for an optimised plan.",
            )
        )
    blocks.append(("p", intro))
    blocks += actuation_warning(plan)
    blocks += signal_blocks(plan)
    blocks += [
        ("h2", "Plan against the baselines"),
        (
            "p",
            "Every baseline is evaluated by the same code as the plan. *Carbon-agnostic*: "
            "first in, first out at release, each job at its submit site, all nodes on, full power"
            + _submit_rule_text(plan)
            + ". *Shutdown-idle*: the same "
            "schedule with idle nodes powered off. *Carbon-aware greedy*: what best-window "
            "tools plus Slurm power saving give — jobs in earliest-deadline order, each in the "
            "contiguous window with the lowest PUE × mean carbon intensity over its allowed "
            "sites, at the most efficient cap level that still meets its deadline, idle nodes "
            "off. The saving against it is what the optimisation adds. Negative percentages "
            "mean the plan uses less.",
        ),
        ("table", comparison_table(plan)),
    ]
    src = (plan.get("solver") or {}).get("plan_source")
    if src and src != "optimised placement":
        blocks.append(
            (
                "p",
                f"The executed plan is the **{src}** schedule: it scored better by the objective "
                "than the MILP-guided placement, and greencpn keeps the better executable plan.",
            )
        )
    blocks += extra_blocks(plan)
    blocks += solver_blocks(plan)
    blocks += [
        ("h2", "Sites"),
        ("table", site_table(plan)),
        ("h2", "Pools"),
        ("table", pool_table(plan)),
    ]
    late, n_bad = late_table(plan)
    blocks.append(("h2", "Late and unserved jobs"))
    if late is None:
        blocks.append(("p", "None: every job finishes by its deadline."))
    else:
        more = f" (the first {len(late.rows)} shown)" if n_bad > len(late.rows) else ""
        blocks += [("p", f"{n_bad} job(s) are late or not fully served{more}."), ("table", late)]
    diags = [str(d) for d in plan.get("diagnostics") or []]
    if diags:
        shown = diags[:40]
        more = f" (the first {len(shown)} of {len(diags)} shown)" if len(diags) > len(shown) else ""
        blocks += [
            ("h2", "Diagnostics"),
            ("p", f"What the planner flagged about the executed plan{more}:"),
            ("ul", shown),
        ]
    trade = tradeoff_table(plan)
    if trade is not None:
        blocks += [
            ("h2", "Carbon / cost trade-off"),
            (
                "p",
                "Extra MILP solves with other weights. Each row is the **MILP's** carbon and "
                "cost (the stage-1 model's energy at each site and slot, before jobs are placed "
                "and nodes repaired), not an executed plan's: compare the rows with each other "
                "for the shape of the trade-off; the executed plan's figures are the headline's.",
            ),
            ("table", trade),
        ]
    blocks.append(("h2", "Plots"))
    for name in plot_files:
        blocks += [("h3", PLOTS.get(name, name)), ("img", Image(name, PLOTS.get(name, name)))]
    return blocks


# ----------------------------------------------------------------------------- Markdown


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for kind, payload in blocks:
        if kind in {"h1", "h2", "h3"}:
            out += ["#" * int(kind[1]) + " " + payload, ""]
        elif kind == "p":
            out += [payload, ""]
        elif kind == "table":
            t: Table = payload
            align = [
                "---:" if (i < len(t.numeric) and t.numeric[i]) else "---"
                for i in range(len(t.header))
            ]
            out.append("| " + " | ".join(_md_cell(h) for h in t.header) + " |")
            out.append("|" + "|".join(align) + "|")
            for row in t.rows:
                out.append("| " + " | ".join(_md_cell(c) for c in row) + " |")
            out.append("")
        elif kind == "ul":
            out += [f"- {_md_cell(item)}" for item in payload] + [""]
        elif kind == "img":
            img: Image = payload
            out += [f"![{img.alt}]({img.file})", ""]
    return "\n".join(out).rstrip() + "\n"


# ----------------------------------------------------------------------------- HTML

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;
max-width:1180px;padding:0 1rem;color:#1d2327;line-height:1.45}
h1{font-size:1.6rem;border-bottom:3px solid #2e7d32;padding-bottom:.3rem}
h2{font-size:1.25rem;margin-top:2rem;color:#1b5e20}
h3{font-size:1.05rem;margin-bottom:.3rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.88rem}
th,td{border:1px solid #cfd8dc;padding:.25rem .55rem;vertical-align:top}
th{background:#eef3ee;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr:nth-child(even) td{background:#fafbfa}
img{max-width:100%;height:auto;border:1px solid #e0e0e0}
code{background:#f3f3f3;padding:0 .2rem}
p.headline{font-size:1.1rem;background:#e8f5e9;padding:.6rem .8rem;border-left:4px solid #2e7d32}
""".strip()

IMG_SCRIPT = """
(function(){
  function count(){
    var imgs=document.getElementsByTagName('img'), n=0;
    for(var i=0;i<imgs.length;i++){ if(imgs[i].complete && imgs[i].naturalWidth>0){ n++; } }
    document.body.setAttribute('data-images-total', String(imgs.length));
    document.body.setAttribute('data-images-loaded', String(n));
  }
  if(document.readyState==='complete'){ count(); } else { window.addEventListener('load', count); }
})();
""".strip()


def _inline(text: str) -> str:
    """Escape, then render **bold**, *italic* and `code` like the Markdown does."""
    s = html.escape(text)
    s = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", s)
    s = re.sub(r"\*(.+?)\*", r"<em>\1</em>", s)
    s = re.sub(r"`(.+?)`", r"<code>\1</code>", s)
    return s


def to_html(blocks: list[Block], images: dict[str, bytes]) -> str:
    title = next((p for k, p in blocks if k == "h1"), "greencpn report")
    body: list[str] = []
    first_p = True
    for kind, payload in blocks:
        if kind in {"h1", "h2", "h3"}:
            body.append(f"<{kind}>{html.escape(payload)}</{kind}>")
        elif kind == "p":
            cls = ' class="headline"' if first_p else ""
            first_p = False
            body.append(f"<p{cls}>{_inline(payload)}</p>")
        elif kind == "table":
            t: Table = payload
            head = "".join(f"<th>{html.escape(h)}</th>" for h in t.header)
            rows = []
            for row in t.rows:
                cells = "".join(
                    f'<td class="num">{html.escape(c)}</td>'
                    if i < len(t.numeric) and t.numeric[i]
                    else f"<td>{html.escape(c)}</td>"
                    for i, c in enumerate(row)
                )
                rows.append(f"<tr>{cells}</tr>")
            body.append(
                f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
            )
        elif kind == "ul":
            items = "".join(f"<li>{_inline(item)}</li>" for item in payload)
            body.append(f"<ul>{items}</ul>")
        elif kind == "img":
            img: Image = payload
            data = base64.b64encode(images[img.file]).decode("ascii")
            body.append(
                f'<figure><img alt="{html.escape(img.alt)}" data-file="{html.escape(img.file)}" '
                f'src="data:image/png;base64,{data}"></figure>'
            )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + f"\n<script>{IMG_SCRIPT}</script>\n</body></html>\n"
    )


# ----------------------------------------------------------------------------- entry point


def render_report(plan: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and the PNG plots of ``plan`` into ``out_dir``.

    Args:
        plan: a plan dict as in docs/plan-schema.md (``schema = "greencpn.plan/1"``).
        out_dir: folder to write into (created if missing).

    Returns:
        ``{"md": path, "html": path, "<plot>.png": path, ...}``.

    Raises:
        ConfigError: the dict is not a ``greencpn.plan/1`` plan.
    """
    _check_plan(plan)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pngs = make_plots(plan, out_dir)
    blocks = build_blocks(plan, list(pngs))
    md_path = out_dir / "report.md"
    md_path.write_text(to_markdown(blocks), encoding="utf-8")
    html_path = out_dir / "report.html"
    html_path.write_text(
        to_html(blocks, {n: p.read_bytes() for n, p in pngs.items()}), encoding="utf-8"
    )
    return {"md": md_path, "html": html_path, **pngs}
