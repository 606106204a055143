"""The report's sections as blocks: the headline, the notes on the plan (baselines, carbon
signal, solver, actuation), and :func:`build_blocks`, which puts every section in order."""

from __future__ import annotations

from typing import Any

from greencpn.report.elements import BASELINES, Block, Image, Table, _seconds, fmt_num
from greencpn.report.plots import PLOTS
from greencpn.report.tables import (
    comparison_table,
    late_table,
    pool_table,
    site_table,
    tradeoff_table,
)


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
