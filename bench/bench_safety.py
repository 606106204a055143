"""Count the issue-#9 scenarios in which ``greencpn apply`` powered off a busy node.

Every busy-node scenario of issue #9 that ``greencpn apply`` and its hooks own (items 1, 2, 5)
is run end to end through the CLI against a tiny cluster kept in files and driven by a REAL
``command`` hook (tests/actuate/apply/busy_scenarios.py); the IPMI one against real ``ipmi_sim``
BMCs (skipped, and said so, when openipmi/ipmitool are missing). A scenario counts as "busy
node powered off" when the cluster saw a power-off of a node that had running jobs (or a
service no scheduler sees). Measured on this checkout and, with ``--before REV``, on the code
at REV (extracted with ``git archive`` into a temp dir) to show the count the fix removed.

Run: .venv/bin/python bench/bench_safety.py [--before ce3fafd] [--write bench/results/safety.md]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCEN = ROOT / "tests" / "actuate" / "apply" / "busy_scenarios.py"
IPMI_TESTS = ROOT / "tests" / "actuate" / "nodes" / "test_ipmi_hook_bmc_sim.py"
PW_ENV = "GREENCPN_BENCH_IPMI_PW"


def _load(path: Path, name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    mod = sys.modules.setdefault(name, importlib.util.module_from_spec(spec))
    spec.loader.exec_module(mod)
    return mod


def _ipmi_scenario(bs: Any, tmp: Path) -> Any:
    """Start two ipmi_sim BMCs (the test suite's helper), run the ipmi scenario, stop them."""
    t = _load(IPMI_TESTS, "ipmi_bmc_sim_helpers")
    os.environ[PW_ENV] = t.PASSWORD
    bmcs = {}
    try:
        for n in ("n1", "n2"):
            bmcs[n] = t._start_bmc(tmp / "bmcs", n)
        import time

        for b in bmcs.values():  # wait until each answers
            deadline = time.monotonic() + 10
            while subprocess.run(
                ["ipmitool", "-I", "lanplus", "-C", "3", "-H", "127.0.0.1", "-p", str(b.port),
                 "-U", "admin", "-E", "chassis", "power", "status"],
                env={"IPMI_PASSWORD": t.PASSWORD, "PATH": "/usr/bin:/bin"},
                capture_output=True, timeout=10,
            ).returncode:  # fmt: skip
                if time.monotonic() > deadline:
                    raise RuntimeError(f"ipmi_sim for {b.node} did not answer")
                time.sleep(0.05)
        return bs.scenario_ipmi_nesting_a_command_hook(tmp / "c", bmcs, PW_ENV)
    finally:
        for b in bmcs.values():
            b.proc.terminate()
            b.proc.wait(timeout=5)


def run_all(tmp: Path) -> list[dict[str, Any]]:
    """Every scenario on the greencpn that ``sys.path`` imports; one dict per scenario."""
    os.environ.setdefault("GREENCPN_LOOPBACK_ONLY", "1")
    bs = _load(SCEN, "busy_scenarios")
    out = []
    for i, fn in enumerate(bs.SCENARIOS):
        o = fn(tmp / f"s{i}")
        out.append({"name": o.name, "busy_off": o.busy_powered_off, "exit": o.exit_code})
    if shutil.which("ipmi_sim") and shutil.which("ipmitool"):
        o = _ipmi_scenario(bs, tmp / "ipmi")
        out.append({"name": o.name, "busy_off": o.busy_powered_off, "exit": o.exit_code})
    else:
        out.append(
            {"name": "#9.1 ipmi hook nesting a command hook without jobs=N", "skipped": True}
        )
    return out


def run_before(rev: str) -> list[dict[str, Any]]:
    """The same scenarios against the greencpn package at git revision ``rev``."""
    with tempfile.TemporaryDirectory(prefix="greencpn-before-") as d:
        tree = Path(d) / "tree"
        tree.mkdir()
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", rev, "greencpn", "models"],
            capture_output=True,
            check=True,
        )
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
        env = {**os.environ, "PYTHONPATH": str(tree), "BUSY_SCENARIOS_GREENCPN": str(tree)}
        code = (
            "import json, sys, pathlib; sys.path.insert(0, sys.argv[1]);"
            "import bench_safety as b; print(json.dumps(b.run_all(pathlib.Path(sys.argv[2]))))"
        )
        r = subprocess.run(
            [sys.executable, "-c", code, str(ROOT / "bench"), d],
            env=env, capture_output=True, text=True, cwd=d,
        )  # fmt: skip
        if r.returncode:
            raise RuntimeError(f"scenarios on {rev} failed:\n{r.stderr[-3000:]}")
        rows: list[dict[str, Any]] = json.loads(r.stdout.strip().splitlines()[-1])
        return rows


def _count(rows: list[dict[str, Any]]) -> tuple[int, int]:
    ran = [r for r in rows if not r.get("skipped")]
    return sum(1 for r in ran if r["busy_off"]), len(ran)


def render(now_rows: list[dict[str, Any]], before: tuple[str, list[dict[str, Any]]] | None) -> str:
    n_busy, n_ran = _count(now_rows)
    lines = [
        "## Actuation safety: busy nodes powered off (issue #9)",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `bench/bench_safety.py` on this "
        f"machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}. "
        "Each scenario runs `greencpn apply --allow-actuation` through the CLI against a cluster "
        "kept in files, driven by a real `command` hook (scripts), real `ipmi_sim` BMCs for the "
        "IPMI one, and for the kill -9 one a real `greencpn apply` subprocess killed with SIGKILL "
        'while its hook\'s power_off runs. "Busy node powered off" = the cluster saw a power-off '
        "of a node running jobs (or a database no scheduler sees).",
        "",
        f"**Scenarios in which a busy node was powered off: {n_busy} of {n_ran} scenarios run** "
        "(this checkout; must be 0)."
        + (
            f" The same scenarios on `{before[0]}` (before the fixes): "
            f"{_count(before[1])[0]} of {_count(before[1])[1]}."
            if before
            else ""
        ),
        "",
        "| scenario (issue #9 item) | busy nodes powered off, this checkout | exit | "
        + (f"on `{before[0]}` |" if before else "")
        + "",
        "|---|---|---:|" + ("---|" if before else ""),
    ]
    prev = {r["name"]: r for r in before[1]} if before else {}
    for r in now_rows:
        if r.get("skipped"):
            cell = "skipped: ipmi_sim/ipmitool not installed"
            lines.append(f"| {r['name']} | {cell} | - |" + (" - |" if before else ""))
            continue
        b = prev.get(r["name"])
        bcell = ""
        if before:
            bcell = (
                " - |"
                if b is None or b.get("skipped")
                else f" {', '.join(b['busy_off']) or 'none'} (exit {b['exit']}) |"
            )
        lines.append(f"| {r['name']} | {', '.join(r['busy_off']) or 'none'} | {r['exit']} |{bcell}")
    lines += [
        "",
        "Cells list `<node> <jobs killed or service>`; exit is `greencpn apply`'s status (the kill "
        "-9 row: the re-run at once, refused with 1 while the orphaned hook runs; #9.5 rows: 2, "
        "the plan refused). The agent's own scenarios (issue #9 items 3, 4) are measured in "
        "bench/results/agent.md.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--before", default=None, help="also run on this git revision")
    ap.add_argument("--write", nargs="?", const="bench/results/safety.md", default=None)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="greencpn-safety-") as d:
        rows = run_all(Path(d))
    before = (args.before, run_before(args.before)) if args.before else None
    text = render(rows, before)
    print(text)
    if args.write:
        (ROOT / args.write).write_text(text)
        print(f"wrote {args.write}")
    busy, _ = _count(rows)
    return 1 if busy else 0


if __name__ == "__main__":
    sys.exit(main())
