"""Issue #14.3: a Slurm job's GPU indices from `scontrol show job -d` (two jobs on one GPU:
tests/actuate/apply/test_job_caps.py)."""

from __future__ import annotations

from greencpn.actuate.gpu.jobs import parse_job_gpus

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
