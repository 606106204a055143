"""SIGKILL the controller process mid-step (subprocess), restart: the ledger and the fleet are
consistent — the interrupted step is marked, started-but-unfinished actions are re-observed
(never blindly repeated), and the next step finishes the job."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from greencpn.actuate.apply import Backends
from greencpn.clock import SimClock
from greencpn.controller import Controller, Mode
from tests.controller.conftest import START, iso, write_tiny
from tests.controller.filehook import FileHook

ROOT = Path(__file__).resolve().parents[2]
JOB = {
    "id": "j1",
    "gpus": 2,
    "work_gpu_h": 4,
    "release": iso(START),
    "deadline": iso(START + timedelta(hours=30)),
}

CHILD = """
import sys
from datetime import datetime, timedelta
from pathlib import Path
sys.path.insert(0, {root!r})
from tests.controller.filehook import FileHook
from greencpn.actuate.apply import Backends
from greencpn.clock import SimClock
from greencpn.controller import Controller, Mode
tmp = Path({tmp!r})
clock = SimClock(datetime.fromisoformat({now!r}))
hooks = {{"p1": FileHook(tmp / "p1.json"), "p2": FileHook(tmp / "p2.json")}}
c = Controller(tmp / "fleet.toml", clock=clock, state_dir=tmp / "state", mode=Mode.ENFORCE,
               backends=Backends(hooks=hooks, gpus=lambda n: None),
               sleep=lambda s: clock.advance(timedelta(seconds=s)))
r = c.step()
print("FINISHED", r.status)
"""


def controller(tmp: Path, clock: SimClock) -> tuple[Controller, dict[str, FileHook]]:
    hooks = {"p1": FileHook(tmp / "p1.json"), "p2": FileHook(tmp / "p2.json")}
    c = Controller(
        tmp / "fleet.toml",
        clock=clock,
        state_dir=tmp / "state",
        mode=Mode.ENFORCE,
        backends=Backends(hooks=hooks, gpus=lambda n: None),
        sleep=lambda s: clock.advance(timedelta(seconds=s)),
    )
    return c, hooks


@pytest.mark.parametrize("kill_at", ["status:any", "power_off:a1", "power_off:a3"])
def test_sigkill_mid_step_then_restart(tmp_path, kill_at):
    write_tiny(tmp_path, jobs=[JOB])
    FileHook(tmp_path / "p1.json", [f"a{i}" for i in range(1, 5)])
    FileHook(tmp_path / "p2.json", [f"b{i}" for i in range(1, 5)])
    now = START + timedelta(minutes=1)
    env = dict(os.environ, GREENCPN_TEST_SLOW=kill_at)
    code = CHILD.format(root=str(ROOT), tmp=str(tmp_path), now=now.isoformat())
    proc = subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    marker = tmp_path / "p1.marker"
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the child never reached the kill point"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    before = FileHook(tmp_path / "p1.json").ops()

    clock = SimClock(now + timedelta(minutes=2))
    c, hooks = controller(tmp_path, clock)
    r = c.step()
    db = c.ledger.db
    steps = db.execute("SELECT id, status FROM steps ORDER BY id").fetchall()
    assert [tuple(s) for s in steps] == [(1, "interrupted"), (2, r.status.value)]
    # nothing left open in either ledger
    assert not c.ledger.actions(status="started") and not c.ledger.actions(status="intended")
    assert "interrupted" in [f["type"] for f in c.ledger.failures(1)]
    first = {a.target: a for a in c.ledger.actions(1) if a.kind == "power_off"}
    if kill_at == "status:any":
        assert first == {}  # killed while observing: no action had been written
    else:
        changed = {line.split()[1] for line in before if line.startswith("power_off")}
        started = {n: a for n, a in first.items() if a.pool == "p1"}
        assert started and all(a.epoch is None for a in started.values())
        for node, a in started.items():
            # re-observed after the restart: done if the change had happened, else failed
            assert a.status == ("done" if node in changed else "failed"), (node, a)
            assert "re-observed after restart" in (a.message or "")
        # the other pool's actions had not started when the process died
        assert {a.status for n, a in first.items() if a.pool == "p2"} <= {"abandoned"}
    # the fleet ends as planned, and no node was powered off twice
    ops = hooks["p1"].ops()
    offs = [line for line in ops if line.startswith("power_off")]
    assert len(offs) == len(set(offs)), offs
    plan_on = r.plan["pools"][0]["slots"][0]["nodes_on"]
    status = hooks["p1"].status([f"a{i}" for i in range(1, 5)])
    assert sum(1 for s in status if s.power.value == "on") == plan_on
    # power history: each node switched off exactly once in the ledger
    cycles = db.execute("SELECT node FROM power_cycles WHERE event = 'off'").fetchall()
    all_offs = offs + [line for line in hooks["p2"].ops() if line.startswith("power_off")]
    assert sorted(x[0] for x in cycles) == sorted(line.split()[1] for line in all_offs)
