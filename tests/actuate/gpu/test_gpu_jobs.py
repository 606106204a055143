"""Issue #14.3: a Slurm job's GPU indices from `scontrol show job -d`, merged into per-GPU caps."""

from __future__ import annotations

import pytest

from greencpn.actuate.gpu.jobs import parse_job_gpus, per_gpu_caps
from greencpn.errors import ConfigError

SHOW = """JobId=4103 JobName=bert
   UserId=alice(1000) GroupId=alice(1000) MCS_label=N/A
   JobState=RUNNING Reason=None Dependency=(null)
   NodeList=gpu[01-03]
     Nodes=gpu[01-02] CPU_IDs=0-15 Mem=128000 GRES=gpu:a100:2(IDX:0-1)
     Nodes=gpu03 CPU_IDs=0-7 Mem=64000 GRES=gpu:a100:1(IDX:3)
   TresPerNode=gres:gpu:2
"""
OLD = "     Nodes=n7 CPU_IDs=0-3 Mem=0 GRES_IDX=gpu(IDX:0,2-3)\n"


def test_parse_job_gpus() -> None:
    assert parse_job_gpus(SHOW) == {"gpu01": (0, 1), "gpu02": (0, 1), "gpu03": (3,)}
    assert parse_job_gpus(OLD) == {"n7": (0, 2, 3)}
    assert parse_job_gpus("JobId=1 JobState=PENDING\n") == {}


def test_per_gpu_caps_and_conflicts() -> None:
    a = parse_job_gpus(SHOW)
    b = parse_job_gpus("     Nodes=gpu03 CPU_IDs=8-15 Mem=0 GRES=gpu:2(IDX:0-1)\n")
    caps = per_gpu_caps([("4103", 300.0, a), ("4200", 225.0, b)])
    assert caps == {
        "gpu01": {0: 300.0, 1: 300.0},
        "gpu02": {0: 300.0, 1: 300.0},
        "gpu03": {3: 300.0, 0: 225.0, 1: 225.0},
    }
    with pytest.raises(ConfigError, match="GPU 3 of gpu03 is claimed by jobs 4103 and 9"):
        per_gpu_caps([("4103", 300.0, a), ("9", 200.0, {"gpu03": (3,)})])
