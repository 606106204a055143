"""Issue #9.2: ``kill -9`` of ``greencpn apply`` while a slow hook runs. The hook runs in its own
session, so it outlives apply; the apply lock must outlive apply too while that hook lives, and
the interrupted power operation is re-observed (and recorded) before anything else touches the
node. A REAL ``greencpn apply`` subprocess, SIGKILLed while the command hook's power_off sleeps.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from greencpn.actuate.ledger import Ledger

_spec = importlib.util.spec_from_file_location(
    "busy_scenarios", Path(__file__).resolve().parent / "busy_scenarios.py"
)
assert _spec and _spec.loader
bs = sys.modules.setdefault("busy_scenarios", importlib.util.module_from_spec(_spec))
_spec.loader.exec_module(bs)

OFF_DELAY_S = 10.0  # two CLI runs (≈ 1–3 s each at load 5) must fit inside it


def _wait_for(pred, timeout_s: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.mark.slow
def test_kill_9_of_apply_keeps_the_lock_until_the_orphaned_hook_ends(tmp_path: Path) -> None:
    c = bs.make_cluster(tmp_path, nodes={"n1": 0, "n2": 0})
    off = bs.write_plan(
        tmp_path / "off.json",
        c.config,
        [{"name": "p", "nodes": 2, "nodes_on": [0, 0]}],
        start=bs.this_hour(),
    )
    on = bs.write_plan(
        tmp_path / "on.json",
        c.config,
        [{"name": "p", "nodes": 2, "nodes_on": [2, 2]}],
        start=bs.this_hour(),
    )
    state = tmp_path / "state"
    env = {
        **os.environ,
        "PYTHONPATH": str(bs.ROOT),
        "CLUSTER_OFF_DELAY_S": str(OFF_DELAY_S),
    }
    argv = ["--slot", "now", "--state-dir", str(state), "--allow-actuation"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "greencpn.cli", "apply", str(off), *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait_for(lambda: c.calls("power_off"), 60, "the hook's power_off to start")
        proc.send_signal(signal.SIGKILL)  # the apply process only: its hook lives on
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    t_killed = time.monotonic()
    assert c.calls("power_off") == ["power_off n[1-2]"]

    # an immediate re-run, and the next slot's "all on": both refused while the orphan runs
    for plan in (off, on):
        rc, out, err = bs.run_cli(["apply", str(plan), *argv], env={"CLUSTER_OFF_DELAY_S": "0"})
        assert rc == 1 and "apply.lock" in err, out + err
        assert "hook process" in err and "still running" in err, err
    assert time.monotonic() - t_killed < OFF_DELAY_S, "the checks took too long to mean anything"
    assert c.calls("power_off", "power_on", "resume") == ["power_off n[1-2]"]

    # the orphan finishes: nodes are off; the next apply re-observes them first and records it
    _wait_for(
        lambda: c.node("n1")["power"] == "off" and c.node("n2")["power"] == "off",
        OFF_DELAY_S + 10,
        "the orphaned power_off to finish",
    )
    time.sleep(0.3)  # let the orphan's process exit
    rc, out, err = bs.run_cli(["apply", str(on), *argv])
    assert rc == 0, out + err
    assert "has no recorded result; re-observed: n1=off, n2=off" in out, out
    assert c.calls("power_off") == ["power_off n[1-2]"]  # never a second power-off
    assert c.node("n1")["power"] == "on" and c.node("n2")["power"] == "on"
    with Ledger.open_readonly(state) as led:
        first = led.steps(1)
        (pending,) = [s for s in first if s.action == "power_off"]
        assert pending.status == "interrupted"
        assert pending.result["observed"] == {"n1": "off", "n2": "off"}
        assert led.node("n1").power == "on"
