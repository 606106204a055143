"""Philly and GAIA trace readers: hand-checkable small files, then the real traces."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from greencpn.errors import ConfigError
from greencpn.sources.traces import (
    DeadlineRule,
    frame_to_jobs,
    load_trace_jobs,
    read_gaia,
    read_philly,
)

TRACES = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "traces"


def _need(name: str) -> Path:
    path = TRACES / name
    if not path.is_file():
        pytest.skip(f"real trace {path} is absent (../shared/data not laid out)")
    return path


def test_philly_small(tmp_path: Path) -> None:
    f = tmp_path / "philly.csv"
    f.write_text(
        "timestamp,duration,num_gpus,gpu_time,cluster\n"
        "2017-10-09 07:00:00,3600.0,2,7200.0,c1\n"
        "2017-10-09 06:00:00,1800.0,1,1800.0,c2\n"
    )
    df = read_philly(f, DeadlineRule(slack_h=2.0, slack_factor=1.0))
    assert list(df["id"]) == ["philly-1", "philly-0"]  # sorted by release
    first = df.iloc[0]
    assert first["release"] == datetime(2017, 10, 9, 6, tzinfo=UTC)
    assert first["work_gpu_h"] == pytest.approx(0.5)
    # deadline = release + 0.5 h × (1 + 1) + 2 h
    assert first["deadline"] == datetime(2017, 10, 9, 9, tzinfo=UTC)
    jobs = frame_to_jobs(df, checkpointable=True)
    assert jobs[1].gpus == 2 and jobs[1].work_gpu_h == pytest.approx(2.0)
    assert jobs[1].deadline == datetime(2017, 10, 9, 7, tzinfo=UTC) + timedelta(hours=4)
    assert all(j.checkpointable for j in jobs)


def test_gaia_small_with_epoch(tmp_path: Path) -> None:
    f = tmp_path / "gaia.csv"
    f.write_text("arrival_time,length,cpus\n0.0,2.5,1\n1.5,0.25,4\n")
    epoch = datetime(2024, 6, 1, tzinfo=UTC)
    df = read_gaia(f, DeadlineRule(slack_h=24.0), epoch=epoch)
    assert list(df["release"]) == [epoch, epoch + timedelta(hours=1.5)]
    assert list(df["work_gpu_h"]) == [2.5, 1.0]
    assert df.iloc[1]["deadline"] == epoch + timedelta(hours=1.5 + 0.25 + 24)
    sub = read_gaia(f, epoch=epoch, start=epoch + timedelta(hours=1))
    assert list(sub["id"]) == ["gaia-1"]


def test_trace_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        read_philly(tmp_path / "none.csv")
    f = tmp_path / "bad.csv"
    f.write_text("arrival,length\n1,2\n")
    with pytest.raises(ConfigError, match=r"missing column\(s\) \['arrival_time', 'cpus'\]"):
        read_gaia(f)
    f.write_text("arrival_time,length,cpus\n1,2,1\n2,0,1\n")
    with pytest.raises(ConfigError, match=r"bad.csv:3.*non-positive"):
        read_gaia(f)
    f.write_text("arrival_time,length,cpus\n1,x,1\n")
    with pytest.raises(ConfigError):
        read_gaia(f)
    with pytest.raises(ConfigError, match="negative slack"):
        DeadlineRule(slack_h=-1)
    with pytest.raises(ConfigError, match="unknown trace kind"):
        load_trace_jobs(f, "borg")


def test_real_philly_trace() -> None:
    path = _need("philly_jobs_pollux.csv")
    t0 = time.perf_counter()
    df = read_philly(path)
    elapsed = time.perf_counter() - t0
    assert len(df) == 82247
    assert df["release"].min() == datetime(2017, 9, 4, 10, 30, 41, tzinfo=UTC)
    assert df["gpus"].max() == 128 and (df["gpus"] == 1).mean() > 0.9  # "93 % ask 1 GPU"
    assert (df["deadline"] > df["release"]).all()
    assert elapsed < 2.0, f"reading Philly took {elapsed:.2f} s"
    week = df[(df["release"] >= "2017-10-03") & (df["release"] < "2017-10-10")]
    jobs = frame_to_jobs(week)
    assert len(jobs) == len(week) > 1000
    assert all(j.release.tzinfo is not None for j in jobs[:10])


def test_real_gaia_trace() -> None:
    path = _need("gaia_pai-100k.csv")
    df = read_gaia(path)
    assert len(df) == 99998
    assert df["release"].min() == datetime(2023, 1, 1, tzinfo=UTC)
    assert df["release"].max() < datetime(2024, 1, 1, tzinfo=UTC)
    jobs = load_trace_jobs(path, "gaia", end=datetime(2023, 1, 2, tzinfo=UTC))
    assert 20 < len(jobs) < 1000  # 31 jobs arrive on the first day
    assert all(j.deadline - j.release >= timedelta(hours=24) for j in jobs)
