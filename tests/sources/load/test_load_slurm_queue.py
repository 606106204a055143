"""Slurm queue parsing on recorded 22.05 output and hand-written 24.05 shapes; JSON/CSV job files."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from greencpn.errors import ConfigError, PermanentError
from greencpn.sources.load import load_jobs_file
from greencpn.sources.slurm_queue import (
    QueueRules,
    expand_hostlist,
    parse_comment,
    parse_gpu_count,
    parse_sacct_json,
    parse_squeue_json,
    read_queue_file,
    read_squeue,
)

DATA = Path(__file__).parent / "data"
NOW_2205 = datetime.fromtimestamp(1795643970, UTC)  # when the 22.05 output was recorded
NOW_2405 = datetime.fromtimestamp(1795644000, UTC)


def _ts(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


# ----------------------------------------------------------------------------- small parsers


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("vm", ["vm"]),
        ("gpu[01-03]", ["gpu01", "gpu02", "gpu03"]),
        ("gpu[001-002,010],login", ["gpu001", "gpu002", "gpu010", "login"]),
        ("r[1-2]n[8-9]", ["r1n8", "r1n9", "r2n8", "r2n9"]),
        ("", []),
        ("None assigned", []),
    ],
)
def test_expand_hostlist(text: str, names: list[str]) -> None:
    assert expand_hostlist(text) == names


def test_expand_hostlist_refuses_bad_input() -> None:
    with pytest.raises(ConfigError, match="unbalanced"):
        expand_hostlist("gpu[01-02")
    with pytest.raises(ConfigError, match="bad range"):
        expand_hostlist("gpu[a-b]")


@pytest.mark.parametrize(
    ("spec", "gpus"),
    [
        ("gres/gpu=4", 4),  # TRES string
        ("gres:gpu:2", 2),  # 22.05 tres_per_node
        ("gres/gpu:2", 2),  # 23.x tres_per_node
        ("gres/gpu:a100:2", 2),  # typed
        ("gpu:4", 4),
        ("gpu", 1),
        ("cpu=1,mem=1000M,node=1,billing=1,gres/gpu=2", 2),
        ("cpu=64,node=2,gres/gpu=8,gres/gpu:a100=8", 8),  # untyped total wins
        ("gres/gpu:t1:1,gres/gpu:t2:3", 4),  # typed only: summed
        ("cpu=2,mem=1000M", None),
        ("gres/shard:2", None),
        ("", None),
    ],
)
def test_parse_gpu_count(spec: str, gpus: int | None) -> None:
    assert parse_gpu_count(spec) == gpus


def test_parse_comment() -> None:
    assert parse_comment("greencpn:deadline=2026-11-27T00:00:00Z,checkpointable") == {
        "deadline": "2026-11-27T00:00:00Z",
        "checkpointable": "true",
    }
    assert parse_comment("nightly eval greencpn:deadline=+36h;priority=2 other") == {
        "deadline": "+36h",
        "priority": "2",
    }
    assert parse_comment("no hints here") == {}
    assert parse_comment(None) == {}


# ----------------------------------------------------------------------------- recorded 22.05


def test_squeue_2205_recorded() -> None:
    snap = read_queue_file(DATA / "slurm-22.05_squeue.json", NOW_2205)
    assert snap.slurm_version == "22.05.8"
    jobs = {j.id: j for j in snap.jobs}
    # pending GPU jobs, the 3-task array expanded; finished/cancelled ones left out
    assert sorted(jobs) == ["13", "14", "17_0", "17_1", "17_2", "18"]
    big = jobs["13"]  # --gres=gpu:4 -t 120, comment greencpn:deadline=+36h,checkpointable
    assert big.gpus == 4 and big.work_gpu_h == pytest.approx(8.0)
    assert big.release == _ts(1795643966)
    assert big.deadline == big.release + timedelta(hours=36)
    assert big.checkpointable
    later = jobs["14"]  # --begin=now+2hours: released at its eligible time
    assert later.release == _ts(1795651166)
    assert later.work_gpu_h == pytest.approx(0.75)
    assert later.deadline == later.release + timedelta(hours=0.75 + 24)  # default slack
    assert jobs["17_1"].checkpointable and jobs["17_1"].work_gpu_h == pytest.approx(0.25)
    assert jobs["18"].work_gpu_h == pytest.approx(72.0)  # UNLIMITED → rules.unlimited_time_limit_h
    # running jobs hold node vm
    run = {r.id: r for r in snap.running}
    assert sorted(run) == ["11", "12"]
    assert run["11"].nodes == ("vm",) and run["11"].gpus == 2
    assert run["11"].expected_end == _ts(1795647568)
    assert run["11"].remaining_gpu_h == pytest.approx(
        2 * (60 - (1795643970 - 1795643968) / 60) / 60
    )
    assert run["12"].gpus == 1  # --gpus=1 → tres_per_job
    assert snap.busy_nodes == frozenset({"vm"})
    skipped = dict(snap.skipped)
    assert skipped == {"15": "held (JobHeldUser)", "16": "requests no GPUs"}


def test_squeue_rules_change_deadlines_and_hold() -> None:
    rules = QueueRules(default_slack_h=2.0, unlimited_time_limit_h=10.0, include_held=True)
    snap = read_queue_file(DATA / "slurm-22.05_squeue.json", NOW_2205, rules)
    jobs = {j.id: j for j in snap.jobs}
    assert jobs["18"].work_gpu_h == pytest.approx(10.0)
    assert jobs["14"].deadline == jobs["14"].release + timedelta(hours=2.75)
    held = jobs["15"]  # --gpus-per-node=2 -t 1-00:00:00, no eligible time → submit time
    assert held.gpus == 2 and held.work_gpu_h == pytest.approx(48.0)
    assert held.release == _ts(1795643966)


def test_sacct_2205_recorded() -> None:
    snap = read_queue_file(DATA / "slurm-22.05_sacct.json", NOW_2205)
    assert snap.slurm_version == "22.05.8"
    jobs = {j.id: j for j in snap.jobs}
    # finished jobs carry their real work: gpus × elapsed
    assert jobs["9"].gpus == 2 and jobs["9"].work_gpu_h == pytest.approx(2 * 3 / 3600)
    assert jobs["10"].work_gpu_h == pytest.approx(1 / 3600)
    assert jobs["13"].gpus == 4 and jobs["13"].work_gpu_h == pytest.approx(8.0)
    # sacct's array record "0x7" is a bitmap of tasks 0,1,2
    assert {"17_0", "17_1", "17_2"} <= set(jobs)
    assert {r.id for r in snap.running} == {"11", "12"}
    assert next(r for r in snap.running if r.id == "11").expected_end == _ts(1795643968 + 3600)
    skipped = dict(snap.skipped)
    assert skipped["3"] == "cancelled without running"
    assert skipped["1"] == "no GPUs in its TRES"  # ran before gres/gpu was an accounted TRES
    only_live = parse_sacct_json(
        (DATA / "slurm-22.05_sacct.json").read_text(), NOW_2205, include_finished=False
    )
    assert "9" not in {j.id for j in only_live.jobs}


# ----------------------------------------------------------------------------- 24.05 shapes


def test_squeue_2405_shapes() -> None:
    snap = read_queue_file(DATA / "slurm-24.05_squeue.handwritten.json", NOW_2405)
    assert snap.slurm_version == "24.05.1"
    jobs = {j.id: j for j in snap.jobs}
    assert sorted(jobs) == ["4102_0", "4102_1", "4102_2", "4102_3", "4103", "4104"]
    ev = jobs["4103"]  # 2 nodes × gres/gpu:a100:2, 240 min, deadline + priority in comment
    assert ev.gpus == 4 and ev.work_gpu_h == pytest.approx(16.0)
    assert ev.deadline == datetime(2026, 11, 27, 6, tzinfo=UTC) and ev.priority == 2.0
    assert jobs["4104"].work_gpu_h == pytest.approx(72.0)  # {"infinite": true}
    assert jobs["4102_2"].deadline == jobs["4102_2"].release + timedelta(hours=12)
    run = {r.id: r for r in snap.running}
    assert run["4101"].nodes == ("gpu01", "gpu02") and run["4101"].gpus == 8
    assert run["4102_4"].nodes == ("gpu03",)
    assert snap.busy_nodes == frozenset({"gpu01", "gpu02", "gpu03"})
    assert dict(snap.skipped) == {"4105": "held (JobHeldAdmin)"}


def test_sacct_2405_shapes() -> None:
    snap = read_queue_file(DATA / "slurm-24.05_sacct.handwritten.json", NOW_2405)
    jobs = {j.id: j for j in snap.jobs}
    assert jobs["4099"].work_gpu_h == pytest.approx(2.0) and jobs["4099"].checkpointable
    assert {f"4102_{i}" for i in range(4)} <= set(jobs)  # bitmap 0xf
    assert jobs["4098"].work_gpu_h == pytest.approx(2.0)  # 4 GPUs × 0.5 h, unlimited limit
    assert snap.running[0].nodes == ("gpu01", "gpu02") and snap.running[0].gpus == 8


# ----------------------------------------------------------------------------- errors


def test_bad_inputs_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid JSON"):
        parse_squeue_json("{not json", NOW_2205)
    with pytest.raises(ConfigError, match="no 'jobs' list"):
        parse_squeue_json("{}", NOW_2205)
    with pytest.raises(PermanentError, match="Invalid user"):
        parse_squeue_json(json.dumps({"jobs": [], "errors": [{"error": "Invalid user"}]}), NOW_2205)
    doc = json.loads((DATA / "slurm-22.05_squeue.json").read_text())
    for job in doc["jobs"]:
        if job["job_id"] == 13:
            job["comment"] = "greencpn:deadline=tomorrow"
    with pytest.raises(ConfigError, match="job 13: comment deadline 'tomorrow'") as exc:
        parse_squeue_json(doc, NOW_2205)
    assert "greencpn:deadline=+36h" in str(exc.value)


def test_read_squeue_runs_the_command(tmp_path: Path) -> None:
    fake = tmp_path / "squeue"
    fake.write_text(f"#!/bin/sh\ncat {DATA / 'slurm-22.05_squeue.json'}\n")
    fake.chmod(0o755)
    snap = read_squeue(NOW_2205, command=[str(fake), "--json"])
    assert len(snap.jobs) == 6
    with pytest.raises(PermanentError, match="not found"):
        read_squeue(NOW_2205, command=[str(tmp_path / "missing")])


# ----------------------------------------------------------------------------- job files


def test_jobs_json_and_csv_files(tmp_path: Path) -> None:
    js = tmp_path / "jobs.json"
    js.write_text(
        json.dumps(
            {
                "jobs": [
                    {
                        "id": "a",
                        "gpus": 2,
                        "work_gpu_h": 4,
                        "release": "2026-03-02T00:00:00Z",
                        "deadline": "2026-03-03T00:00:00Z",
                        "checkpointable": True,
                    },
                    {
                        "id": "b",
                        "gpus": 1,
                        "work_gpu_h": 1.5,
                        "release": "2026-03-02T06:00:00+01:00",
                        "deadline": "2026-03-02T12:00:00Z",
                    },
                ]
            }
        )
    )
    jobs = load_jobs_file(js)
    assert [j.id for j in jobs] == ["a", "b"]
    assert jobs[1].release == datetime(2026, 3, 2, 5, tzinfo=UTC)
    csv = tmp_path / "jobs.csv"
    csv.write_text(
        "id,gpus,work_gpu_h,release,deadline,checkpointable\n"
        "a,2,4,2026-03-02T00:00:00Z,2026-03-03T00:00:00Z,true\n"
    )
    assert load_jobs_file(csv)[0].checkpointable
    # saved squeue output is a jobs file too
    assert len(load_jobs_file(DATA / "slurm-22.05_squeue.json", now=NOW_2205)) == 6


def test_jobs_json_errors_name_the_field(tmp_path: Path) -> None:
    js = tmp_path / "jobs.json"
    js.write_text(
        json.dumps(
            [
                {
                    "id": "x",
                    "gpus": 0,
                    "work_gpu_h": 1,
                    "release": "2026-03-02T00:00:00Z",
                    "deadline": "2026-03-03T00:00:00Z",
                }
            ]
        )
    )
    with pytest.raises(ConfigError, match=r"jobs\[0\]\(x\)\.gpus"):
        load_jobs_file(js)
    js.write_text(
        json.dumps(
            [
                {
                    "id": "x",
                    "gpus": 1,
                    "work_gpu_h": 1,
                    "release": "2026-03-02T00:00:00",
                    "deadline": "2026-03-03T00:00:00Z",
                }
            ]
        )
    )
    with pytest.raises(ConfigError, match="no timezone"):
        load_jobs_file(js)
    with pytest.raises(ConfigError, match="unknown jobs file type"):
        load_jobs_file(tmp_path / "jobs.yaml")
    with pytest.raises(ConfigError, match="needs the current time"):
        load_jobs_file(DATA / "slurm-22.05_squeue.json")


def test_comment_class_sets_the_workload_class() -> None:
    """Issue #14.2: ``greencpn:class=heavy`` in the comment gives the job its GPU workload class."""
    assert parse_comment("greencpn:deadline=+36h,class=heavy")["class"] == "heavy"
    doc = json.loads((DATA / "slurm-22.05_squeue.json").read_text())
    for job in doc["jobs"]:
        if job["job_id"] == 13:
            job["comment"] = "greencpn:deadline=+36h,checkpointable,class=heavy"
    jobs = {j.id: j for j in parse_squeue_json(doc, NOW_2205).jobs}
    assert jobs["13"].workload_class == "heavy"
    assert all(j.workload_class is None for i, j in jobs.items() if i != "13")
    for job in doc["jobs"]:
        if job["job_id"] == 13:
            job["comment"] = "greencpn:class=he@vy"
    snap = parse_squeue_json(doc, NOW_2205)
    assert "13" not in {j.id for j in snap.jobs}
    assert any(i == "13" and "pattern" in why for i, why in snap.skipped)
