"""Issue #14.3: a running job's GPU indices read from a REAL slurmctld + slurmd whose node1
counts 4 GPUs (``gres.conf`` with stand-in device files), through
:meth:`SlurmJobActuator.job_gpus` (``scontrol show job -d``): two jobs get disjoint indices,
a pending job and an unknown id read as not running (None)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from greencpn.actuate.jobs.slurm import SlurmJobActuator
from tests.actuate.jobs.job_plans import sbatch, show_job

if TYPE_CHECKING:
    from slurm_cluster import SlurmCluster

pytestmark = pytest.mark.slow

SLURM_NODE1_EXTRA = "Gres=gpu:4"
SLURM_GRES_CONF = "NodeName=node1 Name=gpu File=/dev/null,/dev/zero,/dev/full,/dev/random"
SLURM_MAIN_PARTITION_EXTRA = "OverSubscribe=FORCE:32"
SLURM_EXTRA_CONF = "GresTypes=gpu\nSchedulerParameters=sched_interval=1,bf_interval=1"
RECORD = os.environ.get("GREENCPN_RECORD_SCONTROL")  # a folder: save the real outputs there


def _wait_running(slurm: SlurmCluster, job_id: str, timeout_s: float = 30.0) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if show_job(slurm, job_id).state == "RUNNING":
            return
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} not RUNNING after {timeout_s} s")


def test_running_jobs_gpu_indices_from_real_slurm(slurm: SlurmCluster) -> None:
    a = sbatch(slurm, "--gres=gpu:2", wrap="sleep 60")
    b = sbatch(slurm, "--gres=gpu:1", wrap="sleep 60")
    _wait_running(slurm, a)
    _wait_running(slurm, b)
    held = sbatch(slurm, "--gres=gpu:1", "--hold", wrap="sleep 60")  # pending (held)
    act = SlurmJobActuator(cluster="greencpntest", slurm_conf=str(slurm.conf))
    try:
        ga, gb = act.job_gpus(a), act.job_gpus(b)
        assert ga is not None and gb is not None
        assert set(ga) == {"node1"} and set(gb) == {"node1"}
        assert len(ga["node1"]) == 2 and len(gb["node1"]) == 1
        assert not set(ga["node1"]) & set(gb["node1"])  # a GPU runs one job
        assert set(ga["node1"]) | set(gb["node1"]) <= {0, 1, 2, 3}
        assert act.job_gpus(held) is None  # pending: nothing to cap
        assert act.job_gpus("999999") is None  # Slurm does not know it
        if RECORD:
            for j in (a, b):
                Path(RECORD, f"scontrol-show-job-d-{j}.txt").write_text(
                    slurm.run("scontrol", "show", "job", "-d", j)
                )
    finally:
        slurm.run("scancel", a, b, held)
