"""Issue #10.3: ``greencpn plan`` shows its progress — the phase, and while HiGHS runs its
elapsed time, incumbent and gap (from HiGHS's own log) — on stderr, only on a terminal or with
``-v``; ``--json`` output stays one JSON document."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from greencpn import cli
from greencpn.clock import SimClock
from greencpn.config import load_config
from greencpn.controller.forecast import make_plan
from greencpn.report.progress import PlanProgress, parse_highs_line
from tests.optimize.conftest import START, write_fleet
from tests.optimize.test_plan_exact import SITE, job, pool

# lines of a real HiGHS 1.16 MIP log (the header, the first incumbent, a later line)
HEADER = "Src  Proc. InQueue |  Leaves   Expl. | BestBound       BestSol              Gap |   Cuts   InLp Confl. | LpIters     Time"
FIRST = " S       0       0         0   0.00%   0               1.163            100.00%        0      0      0         0     0.0s"
LATER = "         0       0         0   0.00%   1.148           1.163              1.29%        0      0      0        27     0.0s"


def _fleet(tmp: Path) -> Path:
    jobs = [job(id=f"j{i}", work=1.0 + i % 3, release=i % 4, deadline=6 + i % 3) for i in range(8)]
    carbon = {"Z": [100, 500, 100, 500, 300, 200, 150, 120, 400]}
    return write_fleet(tmp, carbon=carbon, sites=SITE, pools=pool(nodes=3, gpn=2), jobs=jobs)


def test_highs_log_lines_parse() -> None:
    assert parse_highs_line(HEADER) is None
    assert parse_highs_line("Presolving model") is None
    assert parse_highs_line(FIRST) == ("0", "1.163", "100.00%")
    assert parse_highs_line(LATER) == ("1.148", "1.163", "1.29%")


def test_the_bar_shows_incumbent_and_gap_from_a_real_solve(tmp_path: Path) -> None:
    stream = io.StringIO()
    with PlanProgress(enabled=True, tty=True, stream=stream) as pr:
        make_plan(load_config(_fleet(tmp_path)), SimClock(START))
        assert pr.solver_lines == 0 or pr._last_line  # the tail thread may have read already
    assert pr.solver_lines > 0  # HiGHS wrote its B&B lines to the file greencpn tails
    assert parse_highs_line(pr._last_line) is not None
    pr._phase = "solve (HiGHS)"
    assert " — incumbent " in pr._status() and ", gap " in pr._status()
    assert "greencpn plan: " in stream.getvalue()  # the bar went to the given stream


def test_progress_with_v_and_never_in_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """-v logs the phases (on stderr via greencpn's handler; pytest's capture here)."""
    cfg = _fleet(tmp_path)
    assert cli.main(["plan", "--config", str(cfg), "--out", str(tmp_path / "a"), "-v"]) == 0
    cap = capsys.readouterr()
    got = [m for m in caplog.messages if m.startswith("progress: ")]
    for phase in ("model", "solve", "solved", "placement", "baselines", "report"):
        assert any(m.startswith(f"progress: {phase}") for m in got), (phase, got)
    assert "progress:" not in cap.out
    caplog.clear()
    # --json without -v: no progress at all (stderr is not a terminal here), stdout is JSON
    assert cli.main(["plan", "--config", str(cfg), "--out", str(tmp_path / "b"), "--json"]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out)["schema"] == "greencpn.plan/1"
    assert not [m for m in caplog.messages if m.startswith("progress: ")]
    assert "progress:" not in cap.err
    # and -v --json: progress logged, stdout still exactly one JSON document
    argv = ["plan", "--config", str(cfg), "--out", str(tmp_path / "c"), "--json", "-v"]
    assert cli.main(argv) == 0
    assert json.loads(capsys.readouterr().out)["schema"] == "greencpn.plan/1"
    assert any(m.startswith("progress: solve") for m in caplog.messages)


def test_progress_reaches_stderr_with_v(tmp_path: Path) -> None:
    """Outside pytest's log capture: ``greencpn plan -v`` in a subprocess prints the phases
    on stderr and nothing of them on stdout."""
    import subprocess
    import sys

    cfg = _fleet(tmp_path)
    argv = [sys.executable, "-m", "greencpn", "plan", "--config", str(cfg), "--out"]
    res = subprocess.run(
        [*argv, str(tmp_path / "o"), "--no-report", "-v"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "progress: solve" in res.stderr and "progress: placement" in res.stderr
    assert "progress:" not in res.stdout
