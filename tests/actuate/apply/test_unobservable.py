"""Issue #9.6: when greencpn cannot see the fleet (``sinfo`` missing, no IPMI password), the
unknown nodes are shown and counted, and every mode exits 3 ("fleet not observable") instead of
"nothing to do", exit 0."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "busy_scenarios", Path(__file__).resolve().parent / "busy_scenarios.py"
)
assert _spec and _spec.loader
bs = sys.modules.setdefault("busy_scenarios", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(bs)

HOOKS = {
    "slurm without sinfo": {
        "kind": "slurm",
        "sinfo": "/nonexistent/sinfo",
        "squeue": "/nonexistent/squeue",
    },
    "ipmi without a password": {
        "kind": "ipmi",
        "user": "admin",
        "bmcs": {"n1": "127.0.0.1:9", "n2": "127.0.0.1:9"},
        "password_env": "GREENCPN_TEST_NO_SUCH_PW",
        "timeout_s": 5,
    },
}


@pytest.mark.parametrize("hook", list(HOOKS))
@pytest.mark.parametrize("mode", ["--dry-run", "shadow", "--allow-actuation"])
def test_unknown_status_is_shown_counted_and_exits_3(tmp_path: Path, hook: str, mode: str) -> None:
    c = bs.make_cluster(tmp_path, nodes={"n1": 0, "n2": 0}, hook=HOOKS[hook])
    plan = bs.write_plan(
        tmp_path / "plan.json",
        c.config,
        [{"name": "p", "nodes": 2, "nodes_on": [2, 2]}],
        start=bs.this_hour(),
    )
    argv = ["apply", str(plan), "--slot", "now", "--state-dir", str(tmp_path / "s")]
    if mode != "shadow":
        argv.append(mode)
    rc, out, err = bs.run_cli(argv, env={"GREENCPN_TEST_NO_SUCH_PW": ""})
    text = out + err
    assert "Traceback" not in text
    assert "nothing to do" not in text and "already matched" not in text, text
    assert "2 of 2 node(s) not observable (status unknown" in text, text
    assert "unknown" in text.splitlines()[2]  # a column of the diff table
    assert rc == 3, text
