"""Issue #10 item 2: ``python -m greencpn``, ``greencpn check``, ``-v`` after the subcommand,
library debug output only at ``-vvv``, every error as ``greencpn: error: …``, and the Slurm
Suspend/ResumeProgram console entry points."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from greencpn import cli
from greencpn.actuate import suspend_resume

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "data" / "example"


def _example(tmp_path: Path) -> Path:
    dest = tmp_path / "example"
    shutil.copytree(EXAMPLE, dest)
    return dest / "fleet.toml"


def test_python_dash_m_greencpn(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "greencpn", "--version"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0 and res.stdout.startswith("greencpn "), res.stderr
    res = subprocess.run(
        [sys.executable, "-m", "greencpn", "check", "--config", "missing.toml"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 2 and res.stderr.startswith("greencpn: error: "), res.stderr
    assert "Traceback" not in res.stderr


def test_verbose_after_the_subcommand() -> None:
    assert cli._take_verbosity(["plan", "--config", "f.toml", "-v"]) == (
        1,
        ["plan", "--config", "f.toml"],
    )
    assert cli._take_verbosity(["-v", "check", "-vv", "--config", "x"]) == (
        3,
        ["check", "--config", "x"],
    )
    # after "--" nothing is taken
    assert cli._take_verbosity(["x", "--", "-v"]) == (0, ["x", "--", "-v"])
    # and argparse accepted "-v" after the subcommand before this fix? it did not:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["check", "--config", "x", "-v"])


@pytest.mark.parametrize(
    ("verbose", "own", "lib"),
    [
        (0, logging.WARNING, False),  # inherited from the root
        (1, logging.INFO, False),
        (2, logging.DEBUG, False),
        (3, logging.DEBUG, True),
    ],
)
def test_library_debug_only_at_vvv(
    verbose: int, own: int, lib: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GREENCPN_SOLVER_LOG", raising=False)
    root = logging.getLogger()
    saved = root.level, logging.getLogger("greencpn").level
    try:
        cli.setup_logging(verbose)
        assert logging.getLogger("greencpn.optimize.plan").getEffectiveLevel() == own
        assert logging.getLogger("pyomo.core").isEnabledFor(logging.DEBUG) is lib
        assert logging.getLogger("pyomo.core").isEnabledFor(logging.WARNING)
        import os

        assert ("GREENCPN_SOLVER_LOG" in os.environ) is lib
    finally:
        root.setLevel(saved[0])
        logging.getLogger("greencpn").setLevel(saved[1])


def test_check_passes_the_example(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _example(tmp_path)
    assert cli.main(["check", "--config", str(cfg), "-v"]) == 0
    out = capsys.readouterr().out
    assert f"{cfg}: ok" in out
    assert "carbon oslo (NO): 48 slots covered" in out
    assert "jobs: 600" in out


def test_check_refuses_a_bad_hostlist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _example(tmp_path)
    text = cfg.read_text()
    assert 'hostlist = "' in text
    cfg.write_text(text.replace('hostlist = "', 'hostlist = "broken[', 1))
    assert cli.main(["check", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("greencpn: error: ") and ".hostlist" in err, err


def test_check_refuses_a_horizon_the_carbon_file_does_not_cover(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _example(tmp_path)
    cfg.write_text(
        cfg.read_text().replace('start = "2023-04-25T00:00:00Z"', 'start = "2030-01-01T00:00:00Z"')
    )
    assert cli.main(["check", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("greencpn: error: ") and "carbon.csv" in err and "2030-01-01" in err, err


def test_check_warns_about_jobs_before_the_horizon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _example(tmp_path)
    jobs = cfg.parent / "jobs.csv"
    lines = jobs.read_text().splitlines()
    head = lines[0].split(",")
    row = dict(zip(head, lines[1].split(","), strict=True))
    row.update(id="old-1", release="2023-04-20T00:00:00Z", deadline="2023-04-21T00:00:00Z")
    jobs.write_text("\n".join([*lines, ",".join(row[h] for h in head)]) + "\n")
    assert cli.main(["check", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "1 job(s) have a deadline at or before the horizon start (e.g. old-1)" in out


def test_greencpn_error_prefix_for_non_config_errors(capsys: pytest.CaptureFixture[str]) -> None:
    from greencpn.errors import SolverError

    def boom(args: object) -> int:
        raise SolverError("no_solution")

    parser = cli.build_parser
    try:
        cli.build_parser = lambda: _parser_with(boom)  # type: ignore[assignment]
        assert cli.main(["boom"]) == 1
    finally:
        cli.build_parser = parser  # type: ignore[assignment]
    err = capsys.readouterr().err
    assert err.startswith("greencpn: error: SolverError: no_solution"), err


def _parser_with(func):  # type: ignore[no-untyped-def]
    import argparse

    p = argparse.ArgumentParser(prog="greencpn")
    sub = p.add_subparsers(dest="command")
    sub.add_parser("boom").set_defaults(func=func)
    return p


def test_plan_out_that_is_a_file_is_refused_before_solving(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _example(tmp_path)
    out = tmp_path / "out"
    out.write_text("not a folder")
    assert cli.main(["plan", "--config", str(cfg), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("greencpn: error: --out") and "is a file" in err, err


def test_slurm_console_entries_record_the_call(tmp_path: Path) -> None:
    rec = tmp_path / "power.jsonl"
    assert suspend_resume.suspend_main(["--record", str(rec), "n[1-2]"]) == 0
    assert suspend_resume.resume_main(["n3", "--record", str(rec)]) == 0
    assert suspend_resume.resume_fail_main(["--record", str(rec), "n4"]) == 0
    import json

    got = [json.loads(line) for line in rec.read_text().splitlines()]
    assert [(g["action"], g["nodes"]) for g in got] == [
        ("suspend", ["n1", "n2"]),
        ("resume", ["n3"]),
        ("fail", ["n4"]),
    ]


def test_slurm_console_scripts_are_declared() -> None:
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["greencpn-slurm-suspend"] == "greencpn.actuate.suspend_resume:suspend_main"
    assert scripts["greencpn-slurm-resume"] == "greencpn.actuate.suspend_resume:resume_main"
