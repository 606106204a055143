"""The ``command`` job actuator with a real script that keeps its queue in a JSON file:
the stdin document, the read back, the exit codes and the ledger/undo path end to end."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from greencpn.actuate.jobs import (
    JobActuatorPermanentError,
    JobActuatorTemporaryError,
    JobBackends,
    JobNotFoundError,
    JobNotPendingError,
    SteerMode,
    SteerTarget,
    act_on_jobs,
    undo_all_jobs,
)
from greencpn.actuate.jobs.command import CommandJobActuator
from greencpn.actuate.ledger import Ledger
from greencpn.config import JobActuationConfig

SCRIPT = r"""
import json, sys
from pathlib import Path
state = Path(sys.argv[1])
msg = json.loads(sys.stdin.read())
with open(state.parent / "calls.jsonl", "a") as f:
    f.write(json.dumps(msg) + "\n")
jobs = json.loads(state.read_text())
op = msg["op"]
if op == "pending":
    print(json.dumps({"jobs": list(jobs.values())}))
    sys.exit(0)
if op == "boom":
    sys.exit(9)
job = jobs.get(msg["job_id"])
if job is None:
    print("no such job", file=sys.stderr); sys.exit(3)
if op != "read" and not job["pending"]:
    sys.exit(4)
if op == "defer": job["begin_at"] = msg["begin_at"]
if op == "hold": job["held"] = True
if op == "release": job["held"] = False
if op == "steer":
    job[{"partition": "partition", "features": "features", "nodes": "required_nodes"}[msg["steer"]["mode"]]] = msg["steer"]["value"]
if op == "restore": job[msg["field"]] = msg["value"]
state.write_text(json.dumps(jobs))
print(json.dumps(job))
"""

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def _setup(tmp: Path) -> tuple[CommandJobActuator, Path]:
    (tmp / "queue.py").write_text(SCRIPT)
    state = tmp / "queue.json"
    state.write_text(
        json.dumps(
            {
                "7": {
                    "id": "7",
                    "state": "PENDING",
                    "pending": True,
                    "gpus": 2,
                    "time_limit_s": 3600,
                    "submit_at": "2026-12-01T12:00:00Z",
                    "begin_at": "2026-12-01T12:00:00Z",
                    "deadline": None,
                    "held": False,
                    "partition": "main",
                    "user": "alice",
                },
                "8": {
                    "id": "8",
                    "state": "RUNNING",
                    "pending": False,
                    "gpus": 1,
                    "time_limit_s": 60,
                },
            }
        )
    )
    act = CommandJobActuator(
        cluster="lab", argv=[sys.executable, str(tmp / "queue.py"), str(state)], timeout_s=20
    )
    return act, tmp / "calls.jsonl"


def _calls(path: Path) -> list[dict[str, object]]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_stdin_document_read_back_and_exit_codes(tmp_path: Path) -> None:
    act, calls = _setup(tmp_path)
    assert [j.id for j in act.pending_jobs()] == ["7"]  # the running job is not offered
    act.note_plan(
        "7",
        pool="fra-a100",
        start=T0 + timedelta(hours=3),
        latest_safe_start=T0 + timedelta(hours=5),
    )
    ch = act.defer("7", T0 + timedelta(hours=3))
    assert (ch.what, ch.before, ch.after, ch.changed) == (
        "begin_at",
        T0,
        T0 + timedelta(hours=3),
        True,
    )
    assert _calls(calls)[-1] == {
        "op": "defer",
        "cluster": "lab",
        "job_id": "7",
        "planned_pool": "fra-a100",
        "start": "2026-12-01T15:00:00Z",
        "latest_safe_start": "2026-12-01T17:00:00Z",
        "begin_at": "2026-12-01T15:00:00Z",
    }
    st = act.steer("7", SteerTarget(SteerMode.PARTITION, partition="green"))
    assert [(c.before, c.after) for c in st] == [("main", "green")]
    assert _calls(calls)[-1]["steer"] == {"mode": "partition", "value": "green"}
    with pytest.raises(JobNotFoundError):
        act.read("99")
    with pytest.raises(JobNotPendingError):
        act.hold("8")
    bad = CommandJobActuator(
        cluster="lab",
        argv=[sys.executable, "-c", "import sys; sys.exit(5)"],
        permanent_exit_codes=[5],
    )
    with pytest.raises(JobActuatorPermanentError, match="exited 5"):
        bad.pending_jobs()
    flaky = CommandJobActuator(
        cluster="lab", argv=[sys.executable, "-c", "import sys; sys.exit(1)"]
    )
    with pytest.raises(JobActuatorTemporaryError, match="exited 1"):
        flaky.read("7")
    slow = CommandJobActuator(
        cluster="lab", argv=[sys.executable, "-c", "import time; time.sleep(30)"], timeout_s=0.5
    )
    with pytest.raises(JobActuatorTemporaryError, match="timed out"):
        slow.pending_jobs()
    missing = CommandJobActuator(cluster="lab", argv=[str(tmp_path / "nope")])
    with pytest.raises(JobActuatorPermanentError):
        missing.pending_jobs()


def test_through_the_engine_with_ledger_and_undo(tmp_path: Path) -> None:
    act, calls = _setup(tmp_path)
    cfg = JobActuationConfig.model_validate(
        {
            "default_slack_h": 6,
            "clusters": [
                {
                    "name": "lab",
                    "kind": "command",
                    "sites": ["s1"],
                    "command": ["unused"],
                    "steer": "partition",
                    "pools": {"p": {"partition": "green"}},
                }
            ],
        }
    )
    backends = JobBackends(config=cfg, actuators={"lab": act})
    plan = {"jobs": [{"id": "7", "site": "s1", "pool": "p", "start": "2026-12-01T15:00:00Z"}]}
    with Ledger.open(tmp_path / "state") as ledger:
        aid = ledger.begin_apply(T0, plan_path=None, slot=0, slot_start=T0, mode="act")
        rep = act_on_jobs(
            plan,
            backends,
            ledger,
            aid,
            clock_now=lambda: T0,
            next_step_at=T0 + timedelta(hours=1),
            pool_ready=lambda p: True,
            shadow=False,
        )
        assert [(o.action, o.status) for o in rep.outcomes] == [("steer", "ok"), ("defer", "ok")]
        sent = [c for c in _calls(calls) if c["op"] == "defer"][0]
        assert sent["planned_pool"] == "p" and sent["latest_safe_start"] == "2026-12-01T18:00:00Z"
        rep = undo_all_jobs(backends, ledger, aid, clock_now=lambda: T0 + timedelta(minutes=1))
        assert [(o.action, o.status) for o in rep.outcomes] == [("restore", "ok")]
    job = json.loads((tmp_path / "queue.json").read_text())["7"]
    assert job["partition"] == "main" and job["begin_at"] is None  # original begin had passed: now


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    from greencpn.actuate.jobs import make_job_actuator
    from greencpn.actuate.jobs.slurm import SlurmJobActuator

    cfg = JobActuationConfig.model_validate(
        {
            "clusters": [
                {"name": "a", "kind": "slurm", "sites": ["s1"], "slurm_conf": "etc/slurm.conf"},
                {"name": "b", "kind": "command", "sites": ["s2"], "command": ["./bin/q", "--x"]},
                {"name": "c", "kind": "command", "sites": ["s3"], "command": ["myqueue"]},
            ]
        }
    )
    src = str(tmp_path / "fleet.toml")
    a = make_job_actuator(cfg.clusters[0], source=src)
    b = make_job_actuator(cfg.clusters[1], source=src)
    c = make_job_actuator(cfg.clusters[2], source=src)
    assert isinstance(a, SlurmJobActuator) and a.slurm_conf == str(tmp_path / "etc/slurm.conf")
    assert isinstance(b, CommandJobActuator) and b.argv == [str(tmp_path / "bin/q"), "--x"]
    assert isinstance(c, CommandJobActuator) and c.argv == ["myqueue"]  # found on PATH
