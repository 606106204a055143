"""Issue #10.8: a solve that ends with no incumbent (``--time-limit`` too short) falls back to
the safe plan — every usable node on, default caps, jobs at release — flagged as such in the
summary, the report and plan.json, with exit status 3 (documented in ``greencpn plan --help``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from greencpn import cli
from greencpn.optimize import milp
from greencpn.optimize.milp import PlanModel, SolveOutcome, SolveStatus
from greencpn.report.cli import EXIT_SAFE_PLAN
from tests.optimize.conftest import write_fleet
from tests.optimize.test_plan_exact import SITE, job, pool


def _fleet(tmp_path: Path) -> Path:
    return write_fleet(
        tmp_path,
        carbon={"Z": [100, 500, 100, 500, 300, 200]},
        sites=SITE,
        pools=pool(nodes=2, gpn=2),
        jobs=[job(id="j1", work=2.0, release=1.0, deadline=6), job(id="j2", work=1.0)],
    )


def _no_incumbent(self: PlanModel) -> SolveOutcome:
    """What HiGHS returns when the time limit hits before the first feasible solution."""
    return SolveOutcome(
        status=SolveStatus.NO_SOLUTION,
        termination="maxTimeLimit",
        objective=float("nan"),  # what HiGHS gave on the example with --time-limit 1
        bound=float("-inf"),
        mip_gap=None,
        build_s=0.0,
        handoff_s=0.0,
        solve_s=1.0,
    )


def _not_strict(token: str) -> None:
    raise AssertionError(f"plan.json is not strict JSON: {token}")


def test_no_incumbent_writes_the_safe_plan_and_exits_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(milp.PlanModel, "solve", _no_incumbent)
    cfg = _fleet(tmp_path)
    out = tmp_path / "out"
    rc = cli.main(["plan", "--config", str(cfg), "--out", str(out), "--time-limit", "1"])
    text = capsys.readouterr().out
    assert rc == EXIT_SAFE_PLAN == 3
    assert text.startswith("SAFE PLAN — no optimised plan: the solver stopped with no feasible")
    doc = json.loads((out / "plan.json").read_text(), parse_constant=_not_strict)
    assert doc["origin"] == "safe"
    assert doc["executed"]["milp_bound"] is None and doc["executed"]["gap_to_bound"] is None
    assert "nan %" not in text
    assert "default power cap" in doc["safe_fallback"]["rule"]
    assert doc["diagnostics"][0].startswith("SAFE PLAN:")
    # every usable node on, default caps, in every slot
    (p,) = doc["pools"]
    assert {s["nodes_on"] for s in p["slots"]} == {2}
    assert {s["power_cap_w"] for s in p["slots"]} == {p["power_limit_default_w"]}
    # jobs at release: j1 released at hour 1 starts at hour 1, j2 at 0
    start = {j["id"]: j["start"] for j in doc["jobs"]}
    assert start == {"j1": "2026-01-05T01:00:00Z", "j2": "2026-01-05T00:00:00Z"}
    # priced like any plan: its carbon is the carbon-agnostic baseline's (same schedule)
    assert doc["totals"]["carbon_kg"] == pytest.approx(
        doc["baselines"]["carbon_agnostic"]["carbon_kg"]
    )
    md = (out / "report.md").read_text()
    assert "**SAFE PLAN — not an optimised plan.**" in md


def test_other_solver_failures_still_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def infeasible(self: PlanModel) -> SolveOutcome:
        o = _no_incumbent(self)
        o.status = SolveStatus.INFEASIBLE
        return o

    monkeypatch.setattr(milp.PlanModel, "solve", infeasible)
    cfg = _fleet(tmp_path)
    rc = cli.main(["plan", "--config", str(cfg), "--out", str(tmp_path / "o"), "--no-report"])
    assert rc == 1
    assert "greencpn: error: SolverError: the MILP gave no usable plan: infeasible" in (
        capsys.readouterr().err
    )
    assert not (tmp_path / "o" / "plan.json").exists()


def test_the_exit_status_is_documented(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["plan", "--help"])
    assert "3 no feasible solution within the time limit, the safe plan" in " ".join(
        capsys.readouterr().out.split()
    )
