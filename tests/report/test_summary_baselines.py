"""The terminal summary names the three baselines and the plan / greedy ratio."""

from __future__ import annotations

from greencpn.clock import SimClock
from greencpn.config import load_config
from greencpn.controller.forecast import make_plan
from greencpn.report.cli import summary
from tests.optimize.conftest import START, write_fleet
from tests.optimize.test_plan_exact import SITE, job, pool


def one_job_plan(tmp_path) -> dict:
    """plan.json of one 2-GPU-h job due at 06:00 on one pool, carbon 100/500/100/500/300/200."""
    path = write_fleet(
        tmp_path,
        carbon={"Z": [100, 500, 100, 500, 300, 200]},
        sites=SITE,
        pools=pool(),
        jobs=[job(work=2.0, deadline=6)],
    )
    return make_plan(load_config(path), SimClock(START)).document


def test_summary_shows_the_greedy_row_ratio_and_gap_formula(tmp_path):
    doc = one_job_plan(tmp_path)
    text = summary(doc, {}, 0.0)
    row = next(line for line in text.splitlines() if line.startswith("carbon-aware greedy"))
    assert row.split()[4] == "0"  # carbon kg rounded: 0.2 kg
    g = doc["baselines"]["carbon_aware_greedy"]["carbon_kg"]
    assert f"plan / greedy carbon = {doc['totals']['carbon_kg'] / g:.3f}" in text
    assert "150.00 % above the MILP bound ((objective − bound) / bound)" in text
    # the trade-off points, one line each (hand values: 1,234.4 kg → "1,234", cost 56.6 → "57")
    doc["tradeoff"] = [
        {"carbon_weight_per_kg": 1.0, "cost_weight": 0.0, "carbon_kg": 1234.4, "cost": 56.6},
        {"carbon_weight_per_kg": 0.25, "cost_weight": 1.0, "carbon_kg": 2000.0, "cost": 40.0},
    ]
    lines = summary(doc, {}, 0.0).splitlines()
    i = lines.index(
        "carbon/cost trade-off (MILP figures: the stage-1 model before placement, "
        "not executed plans):"
    )
    assert lines[i + 1 : i + 3] == [
        "  w_carbon=1 w_cost=0: MILP 1,234 kg, MILP cost 57",
        "  w_carbon=0.25 w_cost=1: MILP 2,000 kg, MILP cost 40",
    ]


def test_summary_quotes_the_submit_rule_and_the_safe_plans_rule(tmp_path):
    """The submit-site counts of plan.json ``baseline_rules`` get their own line under the
    table, and a safe plan's first lines quote its reason and rule (seed-20261206 sample:
    x_summary__mutmut_191 dropped the submit line, x_summary__mutmut_43 the rule)."""
    doc = one_job_plan(tmp_path)
    doc["baseline_rules"] = {"submit_site": {"jobs_by_rule": {"release site": 1}}}
    doc["origin"] = "safe"
    doc["safe_fallback"] = {"reason": "time limit, no incumbent", "rule": "all nodes on"}
    lines = summary(doc, {}, 0.0).splitlines()
    assert lines[:3] == [
        "SAFE PLAN — no optimised plan: time limit, no incumbent.",
        "  The plan is the safe plan: all nodes on; exit status 3.",
        "",
    ]
    assert (
        "(carbon-agnostic and shutdown-idle start each job at its submit site: "
        "1 job(s) by release site)" in lines
    )
