"""HiGHS' verdict on the re-plan's MIP start, read from its log (``warm_start_info``; the step's
``warm_start_feasible`` metric). The lines are HiGHS' own format strings (highspy 1.16):

- ``MIP start solution is feasible: objective value is %.12g``
- ``MIP start solution is infeasible: objective value is %.12g with violations: variable bound
  = %.4g; constraint bound = %.4g; integrality = %.4g``
"""

from __future__ import annotations

from greencpn.optimize.stability import mip_start_verdict

LOG = "Running HiGHS 1.16.0\n{line}\nPresolving model\n"


def test_a_feasible_start_and_its_objective() -> None:
    line = "MIP start solution is feasible: objective value is 1874.19012"
    assert mip_start_verdict(LOG.format(line=line)) == (True, 1874.19012)


def test_an_infeasible_start_is_not_feasible_and_keeps_its_objective() -> None:
    """Not "no verdict", and the objective is the start's, not the last violation figure."""
    line = (
        "MIP start solution is infeasible: objective value is 2000.5 with violations: "
        "variable bound = 0; constraint bound = 0.25; integrality = 3e-07"
    )
    assert mip_start_verdict(LOG.format(line=line)) == (False, 2000.5)


def test_no_start_line_is_no_verdict() -> None:
    assert mip_start_verdict(LOG.format(line="Solving MIP model with:")) == (None, None)
