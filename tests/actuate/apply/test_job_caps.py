"""Issue #14.3 (apply side): running jobs with their own plan cap (``jobs[].power_cap_w``) get
it on exactly the GPUs Slurm gave them (``scontrol show job -d``, by index, on the job's node);
the pool's other GPUs get the pool cap. A job is capped whole or not at all.

The job GPU indices come from the real :class:`SlurmJobActuator` running a stand-in
``scontrol`` that prints output recorded from a real Slurm 22.05.8 (``data/``; the two-node job
is hand-written in the same format) or fails like a real one.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from greencpn.actuate.apply import Backends
from greencpn.actuate.gpu.errors import GpuPermissionError
from greencpn.actuate.jobs.slurm import SlurmJobActuator
from greencpn.errors import ConfigError

DATA = Path(__file__).parent / "data"
REC1 = (DATA / "slurm-22.05.8_scontrol-show-job-d-1.txt").read_text()  # node1 IDX:0-1
REC2 = (DATA / "slurm-22.05.8_scontrol-show-job-d-2.txt").read_text()  # node1 IDX:2
TWO_NODES = """JobId=7 JobName=ddp
   JobState=RUNNING Reason=None Dependency=(null)
   NodeList=node[1-2]
   JOB_GRES=gpu:2
     Nodes=node1 CPU_IDs=0 Mem=0 GRES=gpu:1(IDX:3)
     Nodes=node2 CPU_IDs=0 Mem=0 GRES=gpu:1(IDX:0)
"""
PENDING = REC2.replace("JobId=2", "JobId=9").replace("JobState=RUNNING", "JobState=PENDING")


def fake_scontrol(tmp: Path, jobs: dict[str, str], *, down: bool = False) -> SlurmJobActuator:
    """The real Slurm actuator over a stand-in ``scontrol``: ``show job -d ID`` prints
    ``jobs[ID]``; an unknown id fails as Slurm does; ``down``: slurmctld unreachable."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    for job_id, text in jobs.items():
        (bin_dir / f"job-{job_id}.txt").write_text(text)
    fail = (
        'echo "slurm_load_jobs error: Unable to contact slurm controller (connect failure)" >&2'
        if down
        else 'echo "slurm_load_jobs error: Invalid job id specified" >&2'
    )
    script = bin_dir / "scontrol"
    script.write_text(
        "#!/bin/sh\n"
        'echo "$@" >> "$(dirname "$0")/calls.log"\n'
        f'[ "$1 $2 $3" = "show job -d" ] && [ -f "$(dirname "$0")/job-$4.txt" ] && '
        f'{"false" if down else "cat"} "$(dirname "$0")/job-$4.txt" && exit 0\n'
        f"{fail}\nexit 1\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return SlurmJobActuator(cluster="c", bin_dir=str(bin_dir), timeout_s=10)


def world(make_world: Any, tmp_path: Path, jobs: dict[str, str], **kw: Any) -> Any:
    w = make_world([dict(name="p", nodes=2, hostlist="node[1-2]", gpus_per_node=4)])
    act = fake_scontrol(tmp_path, jobs, **kw)
    w.backends = lambda: Backends(  # type: ignore[method-assign]
        hooks=dict(w.hooks), gpus=w.gpu_lookup, job_gpus=act.job_gpus
    )
    return w


def plan(w: Any, pool_cap: float | None, job_caps: dict[str, float | None]) -> dict[str, Any]:
    p = w.plan({"p": [(2, pool_cap)] * 3})
    p["jobs"] = [{"id": j, "pool": "p", "gpus": 1, "power_cap_w": c} for j, c in job_caps.items()]
    return dict(p)


def test_running_jobs_get_their_own_cap_on_their_gpus_the_rest_the_pool_cap(
    make_world: Any, tmp_path: Path
) -> None:
    w = world(make_world, tmp_path, {"1": REC1, "2": REC2, "7": TWO_NODES})
    rep = w.apply(plan(w, 300.0, {"1": 250.0, "2": 200.0, "7": 350.0}))
    assert w.caps("node1") == [250.0, 250.0, 200.0, 350.0]
    assert w.caps("node2") == [350.0, 300.0, 300.0, 300.0]
    assert rep.exit_code == 0 and rep.outcome == "applied", rep.format()
    ok = {s.message: s.targets for s in rep.steps if s.status == "ok"}
    assert ok["2 GPU(s) to 250 W (job 1's own cap)"] == ("node1:gpu0", "node1:gpu1")
    assert ok["1 GPU(s) to 200 W (job 2's own cap)"] == ("node1:gpu2",)
    assert ok["2 GPU(s) to 350 W (job 7's own cap)"] == ("node1:gpu3", "node2:gpu0")
    assert ok["3 GPU(s) to 300 W"] == ("node2:gpu1", "node2:gpu2", "node2:gpu3")
    # the ledger names the job in the step's intent
    with w.ledger() as led:
        jobs = [s.intent.get("job") for s in led.steps()]
    assert sorted(j for j in jobs if j) == ["1", "2", "7"]
    # applying again changes nothing (read before write)
    again = w.apply(plan(w, 300.0, {"1": 250.0, "2": 200.0, "7": 350.0}))
    assert again.outcome == "nothing_to_do"
    # the job ended (Slurm no longer knows it): its GPUs go back to the pool cap
    (tmp_path / "bin" / "job-1.txt").unlink()
    w.apply(plan(w, 300.0, {"1": 250.0, "2": 200.0, "7": 350.0}))
    assert w.caps("node1") == [300.0, 300.0, 200.0, 350.0]


def test_pending_and_uncapped_jobs_keep_the_pool_cap(make_world: Any, tmp_path: Path) -> None:
    w = world(make_world, tmp_path, {"1": REC1, "9": PENDING})
    rep = w.apply(plan(w, 300.0, {"1": None, "9": 150.0}))
    assert w.caps("node1") == [300.0] * 4 and rep.exit_code == 0
    calls = (tmp_path / "bin" / "calls.log").read_text().split("\n")
    assert calls[:1] == ["show job -d 9"]  # a job without its own cap is not even looked up


def test_indices_not_read_the_job_keeps_the_pool_cap_reported(
    make_world: Any, tmp_path: Path
) -> None:
    w = world(make_world, tmp_path, {"1": REC1, "2": REC2}, down=True)
    rep = w.apply(plan(w, 300.0, {"1": 250.0, "2": 200.0}))
    assert w.caps("node1") == [300.0] * 4 and w.caps("node2") == [300.0] * 4
    assert rep.job_caps_not_applied == ["job:1", "job:2"]
    skipped = [s for s in rep.steps if s.status == "skipped"]
    assert [s.targets for s in skipped] == [("job:1",), ("job:2",)]
    assert "GPU indices not read" in skipped[0].message and "slurmctld" in skipped[0].message
    assert "keep the pool's cap" in skipped[0].message
    assert rep.exit_code == 1 and rep.outcome == "partial"
    assert "2 job cap(s) not applied" in rep.format()


def test_a_job_that_cannot_be_capped_whole_is_not_capped_at_all(
    make_world: Any, tmp_path: Path
) -> None:
    # job 7 runs on node1 and node2; node2 has no GPU backend: node1:gpu3 keeps the pool cap too
    w = world(make_world, tmp_path, {"7": TWO_NODES, "1": REC1})
    act = fake_scontrol(tmp_path, {})
    w.backends = lambda: Backends(  # type: ignore[method-assign]
        hooks=dict(w.hooks),
        gpus=lambda n: None if n == "node2" else w.gpu_lookup(n),
        job_gpus=act.job_gpus,
    )
    rep = w.apply(plan(w, 300.0, {"7": 350.0, "1": 250.0}))
    assert w.caps("node1") == [250.0, 250.0, 300.0, 300.0]
    assert rep.job_caps_not_applied == ["job:7"]
    assert any("node2 is not on, or its GPUs were not read" in s.message for s in rep.steps)
    assert rep.exit_code == 1


def test_a_gpu_error_rolls_back_that_job_only_others_are_applied(
    make_world: Any, tmp_path: Path
) -> None:
    w = world(make_world, tmp_path, {"7": TWO_NODES, "2": REC2})
    # job 7 writes node1:gpu3 first, then node2:gpu0, which the driver refuses
    w.gpu("node2").inject_error("set_limit", GpuPermissionError("node2 gpu0: no permission"))
    rep = w.apply(plan(w, 400.0, {"7": 250.0, "2": 200.0}))
    assert w.caps("node1") == [400.0, 400.0, 200.0, 400.0]  # job 7 rolled back, job 2 applied
    assert w.caps("node2") == [400.0] * 4
    errors = [s for s in rep.steps if s.status == "error"]
    assert [s.targets for s in errors] == [("node2:gpu0",)]
    assert "job 7's caps left as before" in errors[0].message
    rolled = [s for s in rep.steps if s.action == "rollback_power_cap"]
    assert [(s.status, s.targets) for s in rolled] == [("ok", ("node1:gpu3",))]
    assert rep.exit_code == 1 and rep.outcome == "partial"


def test_a_job_cap_that_does_not_read_back_is_an_error(make_world: Any, tmp_path: Path) -> None:
    w = world(make_world, tmp_path, {"2": REC2})
    real = w.gpu("node1")
    orig = real._set_limit_mw
    real._set_limit_mw = lambda i, mw: orig(i, mw - 20_000)  # type: ignore[method-assign]
    rep = w.apply(plan(w, None, {"2": 200.0}))
    (err,) = [s for s in rep.steps if s.status == "error"]
    assert "set to 200 W but reads back 180 W" in err.message and rep.exit_code == 1


def test_dry_run_and_shadow_show_the_per_job_cap_diff(make_world: Any, tmp_path: Path) -> None:
    w = world(make_world, tmp_path, {"1": REC1, "2": REC2})
    p = plan(w, 300.0, {"1": 250.0, "2": 200.0})
    w.apply(p, dry_run=True)
    text = w.printed[-1]
    assert "p: job 1: own cap 250 W on node1:gpu0,node1:gpu1 (2 lower; now 400 W)" in text
    assert "p: job 2: own cap 200 W on node1:gpu2 (1 lower; now 400 W)" in text
    assert "8 lower" in text  # the table's count: 3 job GPUs + 5 at the pool cap
    from dataclasses import replace

    rep = w.apply(p, settings=replace(w.settings, allow_actuation=False))
    shadow = [s for s in rep.steps if s.status == "shadow" and "job" in s.message]
    assert [s.message for s in shadow] == [
        "would set job 1's own cap 250 W (shadow mode)",
        "would set job 2's own cap 200 W (shadow mode)",
    ]
    assert w.caps("node1") == [400.0] * 4 and not w.ops("set_cap")


def test_a_bad_job_cap_in_the_plan_is_a_clear_error_and_nothing_is_applied(
    make_world: Any, tmp_path: Path
) -> None:
    w = world(make_world, tmp_path, {"1": REC1})
    for bad, words in (
        (-5, "power_cap_w"),
        ("250", "must be a number of watts or null"),
        (900.0, "outside pool 'p'"),
    ):
        with pytest.raises(ConfigError, match=words) as ei:
            w.apply(plan(w, 300.0, {"1": bad}))  # type: ignore[dict-item]
        assert "jobs[0]" in str(ei.value)
    assert w.caps("node1") == [400.0] * 4 and not w.ops()
    assert not (tmp_path / "bin" / "calls.log").exists()  # not even observed


def test_restore_defaults_puts_job_gpus_back_too(make_world: Any, tmp_path: Path) -> None:
    w = world(make_world, tmp_path, {"1": REC1})
    w.apply(plan(w, 300.0, {"1": 250.0}))
    assert w.caps("node1") == [250.0, 250.0, 300.0, 300.0]
    w.gpu("node1").restore_defaults()
    assert w.caps("node1") == [400.0] * 4


def test_without_a_source_of_job_gpus_the_pool_cap_applies_and_the_diff_says_so(
    make_world: Any,
) -> None:
    w = make_world([dict(name="p", nodes=2, hostlist="node[1-2]", gpus_per_node=4)])
    p = w.plan({"p": [(2, 300.0)] * 3})
    p["jobs"] = [{"id": "1", "pool": "p", "power_cap_w": 250.0}]
    rep = w.apply(p)
    assert w.caps("node1") == [300.0] * 4 and rep.exit_code == 0
    assert "1 job(s) with their own cap in the plan: not applied, no source" in w.printed[-1]


def test_two_jobs_with_different_caps_on_one_gpu_the_second_is_refused_whole(
    make_world: Any, tmp_path: Path
) -> None:
    # Slurm reports job 3 on node1 GPUs 1-2 while job 1 holds GPUs 0-1 (e.g. a shared GPU):
    # one GPU cannot carry two caps. Job 1 (first in the plan) gets its cap; job 3 is refused
    # whole — not even on its GPU 2, which nobody else claims — and the refusal is reported.
    shared = REC2.replace("JobId=2", "JobId=3").replace("GRES=gpu:1(IDX:2)", "GRES=gpu:2(IDX:1-2)")
    w = world(make_world, tmp_path, {"1": REC1, "3": shared})
    rep = w.apply(plan(w, 300.0, {"1": 250.0, "3": 200.0}))
    assert w.caps("node1") == [250.0, 250.0, 300.0, 300.0]  # no 200 W anywhere
    assert w.caps("node2") == [300.0] * 4
    assert rep.job_caps_not_applied == ["job:3"]
    (held,) = [s for s in rep.steps if s.status == "skipped"]
    assert held.targets == ("job:3",)
    assert "node1:gpu1 is also claimed by job 1" in held.message
    assert "keep the pool's cap" in held.message
    ok = {s.message: s.targets for s in rep.steps if s.status == "ok"}
    assert ok["2 GPU(s) to 250 W (job 1's own cap)"] == ("node1:gpu0", "node1:gpu1")
    assert not any("job 3" in s.message and s.status == "ok" for s in rep.steps)
    assert rep.exit_code == 1 and rep.outcome == "partial"
    assert "1 job cap(s) not applied" in rep.format()
