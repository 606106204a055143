"""Issue #14.3 through node agents: the real ``greencpn apply`` CLI sets a running job's own
cap on the GPU indices Slurm gave it on ``gn1`` through the agent's per-index
``/v1/gpu/power-limit`` (real agents on 127.0.0.1), and the pool cap on the other node; the
job's GPU indices come from ``[job_actuation]``'s Slurm cluster (a stand-in ``scontrol`` on
PATH printing the recorded Slurm 22.05.8 output with node1 renamed gn1; ``squeue`` lists no
pending job)."""

from __future__ import annotations

import json
import os

import pytest

from tests.actuate.apply.test_apply_agent_gpus import (  # noqa: F401  (the fixture)
    NODES,
    Fleet,
    agents_fleet,
    apply_cli,
    write_config_and_plan,
)
from tests.actuate.apply.test_job_caps import REC1, fake_scontrol

pytestmark = pytest.mark.timeout(90)


def test_job_cap_per_gpu_index_through_the_agents(
    agents_fleet: Fleet,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for n in NODES:
        agents_fleet.start(n)
    cfg, plan_path = write_config_and_plan(agents_fleet, power_cap_w=200.0)
    with cfg.open("a") as f:
        f.write(
            '\n[job_actuation]\n[[job_actuation.clusters]]\nname = "c"\nkind = "slurm"\n'
            'sites = ["s1"]\n'
        )
    fake_scontrol(agents_fleet.tmp, {"1": REC1.replace("node1", "gn1")})  # job 1: gn1 IDX 0-1
    squeue = agents_fleet.tmp / "bin" / "squeue"  # the job step's listing: nothing pending
    squeue.write_text("#!/bin/sh\necho '{\"jobs\": []}'\n")
    squeue.chmod(0o755)
    monkeypatch.setenv("PATH", f"{agents_fleet.tmp / 'bin'}{os.pathsep}{os.environ['PATH']}")
    plan = json.loads(plan_path.read_text())
    plan["jobs"] = [{"id": "1", "pool": "gp", "site": "s1", "gpus": 2, "power_cap_w": 150.0}]
    plan_path.write_text(json.dumps(plan))

    rc, out = apply_cli(agents_fleet, plan_path, 0, capsys)
    assert rc == 0, out
    assert agents_fleet.caps("gn1") == [150.0, 150.0] and agents_fleet.caps("gn2") == [200.0, 200.0]
    assert "2 GPU(s) to 150 W (job 1's own cap)" in out
    rc, out = apply_cli(agents_fleet, plan_path, 0, capsys)  # again: nothing rewritten
    assert rc == 0 and (agents_fleet.sets("gn1"), agents_fleet.sets("gn2")) == (2, 2), out
