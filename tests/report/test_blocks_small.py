"""The report's blocks and tables on the small hand-made plan of ``conftest._plan`` (and small
edits of it), every expected string written out by hand — the cases the seeded mutation sample
of issue 15 item 5 showed no test pinned (bench/results/mutation.md names each mutant).

The hand plan: pool ``fra-a100`` has caps 400, 400, 400, 400, 280, 280 W and busy GPUs
8, 8, 0, 0, 0, 0 (so it is busy only under 400 W caps); job ``train-a`` is on time
(late_h 0, unserved 0), ``gdpr|b`` is 1 h late, ``big<c>`` has 12 GPU-h unserved.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from greencpn.report.elements import Table
from greencpn.report.sections import build_blocks, extra_blocks, solver_blocks
from greencpn.report.tables import comparison_table, late_table, pool_table


def _after(blocks: list[tuple[str, Any]], heading: str) -> list[tuple[str, Any]]:
    """The blocks after the h2 ``heading`` up to the next h2."""
    i = blocks.index(("h2", heading))
    rest = blocks[i + 1 :]
    end = next((k for k, b in enumerate(rest) if b[0] == "h2"), len(rest))
    return rest[:end]


def _table(blocks: list[tuple[str, Any]], heading: str) -> Table:
    (table,) = [b[1] for b in _after(blocks, heading) if b[0] == "table"]
    return table


def test_late_table_lists_only_late_or_unserved_jobs(tiny_plan: dict[str, Any]) -> None:
    """train-a is on time: not listed. big<c> (12 GPU-h unserved) sorts before gdpr|b."""
    table, n_bad = late_table(tiny_plan)
    assert table is not None
    assert n_bad == 2
    assert [r[0] for r in table.rows] == ["big<c>", "gdpr|b"]


def test_pool_table_cap_range_counts_busy_slots_only(tiny_plan: dict[str, Any]) -> None:
    """fra-a100 is busy only in slots 0–1 (400 W); the idle 280 W slots do not count.
    osl-a40 is busy in slots 0–3 at 200, 200, 200, 250 W: "200–250" (not 300)."""
    table = pool_table(tiny_plan)
    cap = {r[0]: r[-1] for r in table.rows}
    assert cap == {"fra-a100": "400", "osl-a40": "200–250"}


def _with_levers(plan: dict[str, Any]) -> dict[str, Any]:
    plan = copy.deepcopy(plan)
    plan["lever_savings"] = {
        "plan_carbon_kg_in_horizon": 9.0,
        "carbon_agnostic_carbon_kg_in_horizon": 40.0,
        "saving_kg": 31.0,
        "interaction_kg": 1.0,
        "levers": [
            {
                "label": "shifting in time",
                "carbon_kg_with_lever_undone": 21.4,
                "saving_kg": 12.4,
                "share_of_saving": 0.4,
            },
            {
                "label": "sleeping nodes",
                "carbon_kg_with_lever_undone": 26.6,
                "saving_kg": 17.6,
                "share_of_saving": None,
            },
        ],
    }
    return plan


def test_lever_table_rows_and_shares(tiny_plan: dict[str, Any]) -> None:
    """Share 0.4 → "40 %"; a missing share → "–"; the interaction row last."""
    blocks = extra_blocks(_with_levers(tiny_plan))
    table = _table(blocks, "Saving by lever")
    assert table.rows == [
        ["shifting in time", "21.4", "12.4", "40 %"],
        ["sleeping nodes", "26.6", "17.6", "–"],
        ["interaction (saving − sum of the rows above)", "–", "1.0", "–"],
    ]


def test_delay_table_lists_jobs_with_a_delay(tiny_plan: dict[str, Any]) -> None:
    """Delays 0.0, 2.5, 1.0 h: median 1.00, largest 2.50, 2 delayed; most delayed first."""
    plan = copy.deepcopy(tiny_plan)
    for j, d in zip(plan["jobs"], (0.0, 2.5, 1.0), strict=True):
        j["delay_h"] = d
    blocks = extra_blocks(plan)
    (para,) = [b[1] for b in _after(blocks, "Job delay (start − release)") if b[0] == "p"]
    assert para.startswith(
        "3 placed job(s): median delay 1.00 h, largest 2.50 h, 2 delayed at all."
    )
    table = _table(blocks, "Job delay (start − release)")
    assert [r[0] for r in table.rows] == ["gdpr|b", "big<c>", "train-a"]
    assert [r[4] for r in table.rows] == ["2.50", "1.00", "0.00"]


def test_residency_table_names_the_job(tiny_plan: dict[str, Any]) -> None:
    plan = copy.deepcopy(tiny_plan)
    plan["residency"] = [
        {
            "job": "gdpr|b",
            "jurisdictions": ["EU"],
            "allowed_sites": ["frankfurt"],
            "site": "frankfurt",
            "site_jurisdictions": ["EU", "DE"],
        }
    ]
    table = _table(extra_blocks(plan), "Data residency placements")
    assert table.rows == [["gdpr|b", "EU", "frankfurt", "frankfurt", "EU, DE"]]


def test_solver_table_shows_the_executed_objective(tiny_plan: dict[str, Any]) -> None:
    """executed objective 21.7, gap to bound 0.0138 → "1.380 %"."""
    rows = dict(_table(solver_blocks(tiny_plan), "Solver outcome").rows)
    assert rows["executed objective (job-level plan)"] == "21.700"
    assert rows["executed gap to bound"] == "1.380 %"


def test_intro_and_title(tiny_plan: dict[str, Any]) -> None:
    """Title names the fleet ("fleet" when the plan has none); the intro the horizon."""
    blocks = build_blocks(tiny_plan, [])
    assert blocks[0] == ("h1", "greencpn plan report — tiny")
    intro = next(b[1] for b in blocks if b[0] == "p" and b[1].startswith("Horizon "))
    assert intro.startswith(
        "Horizon 6 × 60 min from 2026-03-02T00:00:00Z (UTC); 2 site(s), 2 pool(s), 3 job(s)."
    )
    plan = copy.deepcopy(tiny_plan)
    del plan["fleet"]
    assert build_blocks(plan, [])[0] == ("h1", "greencpn plan report — fleet")


def test_plan_source_paragraph(tiny_plan: dict[str, Any]) -> None:
    """A plan whose executed schedule is not the MILP-guided placement says which it is."""
    plan = copy.deepcopy(tiny_plan)
    plan["solver"]["plan_source"] = "carbon-aware greedy"
    text = [b[1] for b in build_blocks(plan, []) if b[0] == "p"]
    assert any(
        t.startswith("The executed plan is the **carbon-aware greedy** schedule") for t in text
    )
    plan["solver"]["plan_source"] = "optimised placement"
    assert not any(
        "The executed plan is the" in b[1] for b in build_blocks(plan, []) if b[0] == "p"
    )


def test_tradeoff_paragraph(tiny_plan: dict[str, Any]) -> None:
    (para,) = [
        b[1] for b in _after(build_blocks(tiny_plan, []), "Carbon / cost trade-off") if b[0] == "p"
    ]
    assert para.startswith(
        "Extra MILP solves with other weights. Each row is the **MILP's** carbon"
    )


def test_render_makes_missing_parent_folders(tiny_plan: dict[str, Any], tmp_path: Path) -> None:
    from greencpn.report.render import render_report

    out = tmp_path / "a" / "b" / "report"
    paths = render_report(tiny_plan, out)
    assert paths["md"].parent == out and paths["md"].exists()


# --- seed-20261204 sample (bench/results/mutation.md, session 11): the site table, the energy
# breakdown rows and the safe-plan paragraph, each against values worked out by hand


def test_site_table_under_its_heading_every_cell_by_hand(tiny_plan: dict[str, Any]) -> None:
    """The "Sites" table, found under its own ``h2`` heading, with every cell by hand.

    oslo (PUE 1.1, 0.10 per kWh): IT kW = nodes on × 0.42 + busy GPUs × 0.14 = 2.94, 2.94,
    2.94, 1.40, 0.42, 0.42 → meter × 1.1 = 3.234, 3.234, 3.234, 1.54, 0.462, 0.462; energy
    12.166 kWh; carbon (3.234 × (30 + 31 + 29) + 1.54 × 28 + 0.462 × (30 + 32)) g = 362.8 g;
    cost 1.2166; 1000 × 0.3628 / 12.166 = 29.8 g/kWh; no budget.
    frankfurt (PUE 1.3, 0.25 per kWh): IT kW = 3.36, 3.36, 0, 0, 1.6, 1.6 → meter 4.368, 4.368,
    0, 0, 2.08, 2.08; energy 12.896 kWh; carbon 4.368 × (400 + 380) + 2.08 × (320 + 420) =
    4,946.2 g; cost 3.224; 383.6 g/kWh; budgets 10, 4.368, 2, 2, 2, 10 → lowest 2.0, slot 1 at
    its budget, slot 4 over it (2.08 > 2 × 1.001)."""
    table = _table(build_blocks(tiny_plan, []), "Sites")
    assert table.header == [
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
    assert table.rows == [
        ["frankfurt (DE)", "1", "12.9", "4.9", "3.22", "384", "250–420", "4.4", "2.0", "1", "1"],
        ["oslo (NO)", "2", "12.2", "0.4", "1.22", "30", "28–32", "3.2", "–", "–", "–"],
    ]


def test_energy_breakdown_rows_and_total(tiny_plan: dict[str, Any]) -> None:
    """One row per part, labelled as the report documents them; the total is IT + PUE overhead
    (plan 2 + 1 + 0.5 + 0.3 = 3.8 IT + 0.7 PUE = 4.5; carbon-agnostic 6 + 1.2 = 7.2)."""
    plan = copy.deepcopy(tiny_plan)
    plan["energy_breakdown_kwh"] = {
        "plan": {
            "gpu_busy": 2.0,
            "node_idle": 1.0,
            "node_off": 0.5,
            "boot": 0.3,
            "pue_overhead": 0.7,
            "it_total": 3.8,
        },
        "carbon_agnostic": {
            "gpu_busy": 3.0,
            "node_idle": 2.5,
            "node_off": 0.0,
            "boot": 0.5,
            "pue_overhead": 1.2,
            "it_total": 6.0,
        },
    }
    table = _table(extra_blocks(plan), "Energy breakdown (kWh)")
    assert table.header == ["", "plan", "carbon-agnostic"]
    assert table.rows == [
        ["GPU busy (above idle)", "2.0", "3.0"],
        ["node idle (nodes on)", "1.0", "2.5"],
        ["nodes off (standby)", "0.5", "0.0"],
        ["boot", "0.3", "0.5"],
        ["PUE overhead", "0.7", "1.2"],
        ["total (inside the horizon)", "4.5", "7.2"],
    ]


def test_safe_plan_paragraph_quotes_reason_and_rule(tiny_plan: dict[str, Any]) -> None:
    """A safe plan's report says so right after the headline, with plan.json's reason and rule
    word for word; an optimised plan has no such paragraph."""
    plan = copy.deepcopy(tiny_plan)
    plan["origin"] = "safe"
    plan["safe_fallback"] = {"reason": "no incumbent after 1 s", "rule": "every node on"}
    blocks = build_blocks(plan, [])
    assert blocks[2] == (
        "p",
        "**SAFE PLAN — not an optimised plan.** no incumbent after 1 s; the plan is the safe "
        "plan: every node on. Re-run with a longer `--time-limit` (or `solver.time_limit_s`) "
        "for an optimised plan.",
    )
    assert not any("SAFE PLAN" in str(b[1]) for b in build_blocks(tiny_plan, []))


def test_safe_plan_paragraph_without_a_reason_says_no_incumbent(
    tiny_plan: dict[str, Any],
) -> None:
    """A safe plan whose document has no ``safe_fallback`` block (a plan.json written by hand
    or by another tool): the paragraph falls back to the reason "No incumbent" and an empty
    rule — not the word "None"."""
    plan = copy.deepcopy(tiny_plan)
    plan["origin"] = "safe"
    blocks = build_blocks(plan, [])
    assert blocks[2] == (
        "p",
        "**SAFE PLAN — not an optimised plan.** No incumbent; the plan is the safe plan: . "
        "Re-run with a longer `--time-limit` (or `solver.time_limit_s`) for an optimised plan.",
    )


def test_solver_table_model_size_in_whole_numbers(tiny_plan: dict[str, Any]) -> None:
    """n_vars 120, n_constraints 95, n_job_groups 3 (the hand plan), each with no decimals
    (seed-20261206 sample: x_solver_blocks__mutmut_157 gave "95.0 constraints")."""
    rows = dict(_table(solver_blocks(tiny_plan), "Solver outcome").rows)
    assert rows["model size"] == "120 variables, 95 constraints, 3 job groups"


def _baselines_paragraph(plan: dict[str, Any]) -> str:
    (text,) = [
        b[1] for b in _after(build_blocks(plan, []), "Plan against the baselines") if b[0] == "p"
    ]
    return str(text)


def test_baselines_paragraph_names_the_submit_rule_and_the_sign(
    tiny_plan: dict[str, Any],
) -> None:
    """plan.json ``baseline_rules.submit_site`` (2 jobs by "release site", 1 by "first
    allowed site") is quoted in the carbon-agnostic sentence; the paragraph ends by saying
    what a negative percentage means (seed-20261206: _submit_rule_text__mutmut_19 read
    ``XXjobs_by_ruleXX``, x_build_blocks__mutmut_148 garbled the last sentence)."""
    plan = copy.deepcopy(tiny_plan)
    plan["baseline_rules"] = {
        "submit_site": {
            "jobs_by_rule": {"release site": 2, "first allowed site": 1},
            "rule": "the site the job was released at",
        }
    }
    text = _baselines_paragraph(plan)
    assert (
        "each job at its submit site, all nodes on, full power (submit site: 2 job(s) by "
        "release site, 1 job(s) by first allowed site; the rule: the site the job was "
        "released at; the TOML's order of sites plays no part). *Shutdown-idle*" in text
    )
    assert text.endswith(
        " The saving against it is what the optimisation adds. Negative percentages mean "
        "the plan uses less."
    )


def test_comparison_table_carbon_row_against_each_baseline(tiny_plan: dict[str, Any]) -> None:
    """The hand plan's 5.309 kg against 40, 30 and 8 kg: (5.309 − 40) / 40 = −86.7 %,
    (5.309 − 30) / 30 = −82.3 %, (5.309 − 8) / 8 = −33.6 % (seed-20261206 sample:
    x_comparison_table__mutmut_35 left every baseline cell "–"; it was killed only on the
    recheck, by a test outside mutmut's selection)."""
    rows = {r[0]: r[1:] for r in comparison_table(tiny_plan).rows}
    assert rows["Carbon (kg CO2e)"] == [
        "5.3",
        "40.0",
        "-86.7 %",
        "30.0",
        "-82.3 %",
        "8.0",
        "-33.6 %",
    ]
