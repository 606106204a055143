"""Issue #9: the scenarios in which ``greencpn apply`` powered off a node under running jobs,
each reproduced through the CLI with a REAL command hook (scripts over files, see
busy_scenarios.py). Every one must end with no job killed."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "busy_scenarios", Path(__file__).resolve().parent / "busy_scenarios.py"
)
assert _spec and _spec.loader
bs = sys.modules.setdefault("busy_scenarios", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(bs)


def test_command_hook_without_job_counts_powers_off_nothing(tmp_path: Path) -> None:
    o = bs.scenario_command_hook_without_job_counts(tmp_path)
    assert o.busy_powered_off == [], o.output
    # unknown work counts as busy: nothing drained or powered off, and the run is not "applied"
    assert "running work unknown" in o.output
    assert o.exit_code == 1 and "result: partial" in o.output
    assert "nothing to do" not in o.output and "1 pool(s) differ from the plan: p" in o.output


def test_wol_with_a_nested_command_hook_without_job_counts(tmp_path: Path) -> None:
    o = bs.scenario_wol_nesting_a_command_hook(tmp_path)
    assert o.busy_powered_off == [], o.output
    assert "running work unknown" in o.output and o.exit_code == 1


def test_status_line_without_jobs_is_unknown_work() -> None:
    from greencpn.actuate.hooks.command import parse_status_lines

    a, b, c = parse_status_lines("n1 on\nn2 on jobs=0\nn3 on jobs=2\n", ["n1", "n2", "n3"])
    assert (a.running_jobs, b.running_jobs, c.running_jobs) == (None, 0, 2)


def test_plan_naming_nodes_the_config_does_not_list_is_refused(tmp_path: Path) -> None:
    """#9.5: the config is the authority for which nodes exist; prod-db2 (busy) is not in it."""
    o = bs.scenario_plan_names_nodes_the_config_does_not(tmp_path)
    assert o.busy_powered_off == [], o.output
    assert o.exit_code == 2 and "greencpn: error:" in o.output and "prod-db2" in o.output
    assert "Traceback" not in o.output
    # refused before anything was observed: the hook was never called
    assert not (tmp_path / "cluster" / "calls.log").exists()


def test_plan_with_a_duplicated_pool_is_refused(tmp_path: Path) -> None:
    o = bs.scenario_duplicated_pool_in_plan(tmp_path)
    assert o.busy_powered_off == [], o.output
    assert o.exit_code == 2 and "duplicated" in o.output and "'p'" in o.output
    assert not (tmp_path / "cluster" / "calls.log").exists()
