"""The control step and ``greencpn plan`` with the baselines priced in a worker process
(``[solver] baselines_worker``): the same plans and saving figures as in-process, one worker
kept across steps, none left when the controller closes, and ``plan --json`` still one JSON
document on stdout."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from greencpn.clock import SimClock
from greencpn.config import load_config
from greencpn.controller import Controller, StepStatus
from greencpn.controller.fakes import FakeFleet
from tests.controller.conftest import START, iso, make_controller, write_tiny

ROOT = Path(__file__).resolve().parents[2]

JOBS = [
    {
        "id": f"j{i}",
        "gpus": 1 + i % 2,
        "work_gpu_h": 2 + i % 3,
        "release": iso(START + timedelta(hours=i % 3)),
        "deadline": iso(START + timedelta(hours=8 + i % 4)),
    }
    for i in range(6)
]


def fleet_file(tmp: Path, setting: str) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    path = write_tiny(tmp, jobs=JOBS)
    text = path.read_text().replace(
        "mip_rel_gap = 0.0", f'mip_rel_gap = 0.0\nbaselines_worker = "{setting}"'
    )
    path.write_text(text)
    return path


def spawn_workers(before: set[int]) -> list:
    """Worker processes started since ``before`` (the pids alive then)."""
    return [p for p in multiprocessing.active_children() if p.pid not in before]


def run_steps(tmp: Path, setting: str, steps: int = 2) -> tuple[list, Controller]:
    path = fleet_file(tmp, setting)
    clock = SimClock(START + timedelta(minutes=1))
    fleet = FakeFleet(load_config(path), clock)
    c = make_controller(path, clock, tmp / "state", fleet)
    out = []
    for _ in range(steps):
        r = c.step()
        assert r.status is StepStatus.OK, r.errors
        out.append(r)
        clock.advance(timedelta(hours=1))
    return out, c


def test_steps_with_the_worker_make_the_same_plans(tmp_path):
    before = {p.pid for p in multiprocessing.active_children()}
    on, c_on = run_steps(tmp_path / "on", "on")
    try:
        workers = spawn_workers(before)
        assert len(workers) == 1  # one worker, kept across the steps
        assert c_on._baseline_worker is not None and c_on._baseline_worker.started == 1
    finally:
        c_on.close()
    assert not spawn_workers(before)  # closing the controller stops it
    off, c_off = run_steps(tmp_path / "off", "off")
    c_off.close()
    for a, b in zip(on, off, strict=True):
        assert a.plan["solver"]["baselines_where"] == "worker"
        assert b.plan["solver"]["baselines_where"] == "in-process"
        for key in ("jobs", "pools", "totals", "baselines", "savings"):
            assert a.plan[key] == b.plan[key], key
        for key in ("saved_kg_co2e", "saved_kwh"):
            assert a.metrics[key] == b.metrics[key], key


def test_plan_json_stays_one_document_with_the_worker(tmp_path):
    """The worker's standard output is its standard error: ``greencpn plan --json`` prints
    exactly one JSON document (a subprocess: the worker writes to the real file descriptors)."""
    path = fleet_file(tmp_path, "on")  # the one-off plan needs a horizon start
    path.write_text(path.read_text().replace("[horizon]\n", f'[horizon]\nstart = "{iso(START)}"\n'))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "greencpn", "plan", "--config", str(path), "--out",
         str(tmp_path / "out"), "--json"],
        capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["solver"]["baselines_where"] == "worker"
    assert "worker process failed" not in proc.stderr


@pytest.mark.parametrize("bad", ['"yes"', "true", "1"])
def test_a_bad_setting_names_the_field_and_the_choices(tmp_path, bad):
    path = fleet_file(tmp_path, "on")
    path.write_text(
        path.read_text().replace('baselines_worker = "on"', f"baselines_worker = {bad}")
    )
    proc = subprocess.run(
        [sys.executable, "-m", "greencpn", "check", "--config", str(path)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "solver.baselines_worker" in proc.stderr and "'auto', 'on' or 'off'" in proc.stderr
    assert "Traceback" not in proc.stderr
