"""``greencpn run`` / ``greencpn status`` from the command line (real controller, fake nodes):
user errors exit 2 without a traceback; ``--once``; SIGKILL mid-step and restart."""

from __future__ import annotations

import json
import math
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from greencpn.cli import main
from tests.controller.conftest import START, iso, write_tiny

JOB = {
    "id": "j1",
    "gpus": 2,
    "work_gpu_h": 4,
    "release": iso(START),
    "deadline": iso(START + timedelta(hours=10)),
}


def _err(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("greencpn: error: ") and "Traceback" not in err
    return err


def test_user_errors_exit_2_with_a_clear_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _err(capsys, ["run", "--config", str(tmp_path / "nope.toml")])
    assert "nope.toml" in err and "config file not found" in err
    path = write_tiny(tmp_path, jobs=[JOB])
    (tmp_path / "control.toml").write_text("[daemon]\non_exit = 'explode'\n")
    err = _err(capsys, ["run", "--once", "--config", str(path)])
    assert "control.toml" in err and "daemon.on_exit" in err and "'leave' or 'restore'" in err
    (tmp_path / "control.toml").write_text("")
    err = _err(capsys, ["run", "--config", str(path), "--at", "2026-01-05T01:00:00Z"])
    assert "--at works only with --once" in err
    err = _err(capsys, ["run", "--once", "--config", str(path), "--at", "yesterday"])
    assert "--at" in err and "2023-04-25T06:00:00Z" in err
    err = _err(capsys, ["status", "--state-dir", str(tmp_path / "empty")])
    assert "no daemon state here" in err and "--state-dir" in err


def test_run_once_then_status(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_tiny(tmp_path, jobs=[JOB])
    state = tmp_path / "state"
    at = iso(START + timedelta(minutes=1))
    argv = [
        "run",
        "--once",
        "--config",
        str(path),
        "--state-dir",
        str(state),
        "--fake-backends",
        "--at",
        at,
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.startswith("step 1 slot 2026-01-05T00:00Z: ok (shadow), ")
    assert main(["status", "--state-dir", str(state), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    # the documented schema (docs/daemon.md, issue #10.2)
    assert doc["schema"] == "greencpn.status/1"
    assert set(doc) >= {
        "state_dir", "mode", "levers", "leader", "updated_at", "pid", "config", "period_s",
        "savings", "last_steps", "plan", "jobs", "held_jobs", "power_cycles", "failures",
        "reload", "ledger_steps",
    }  # fmt: skip
    assert doc["mode"] == "shadow" and doc["leader"]["enabled"] is False
    assert [s["status"] for s in doc["ledger_steps"]] == ["ok"]
    assert doc["plan"]["horizon"]["start"] == "2026-01-05T00:00:00Z"
    assert main(["status", "--state-dir", str(state)]) == 0
    text = capsys.readouterr().out
    assert "mode        shadow" in text and "#1 " in text and "plan        from 2026-01-05" in text
    # the figures an operator looks for first are printed, whatever keys plan.json adds
    totals = doc["plan"]["totals"]
    assert f"late_jobs {totals['late_jobs']}," in text and "unserved_gpu_h" in text
    assert "carbon_kg_in_horizon" not in text  # in --json only


def _carbon_around_now(tmp: Path) -> None:
    """Replace the tiny fleet's carbon file by one covering yesterday to 3 days ahead."""
    t0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
    rows = ["datetime_utc,Z1,Z2"]
    for h in range(96):
        s = math.sin(2 * math.pi * (h % 24) / 24)
        rows.append(f"{iso(t0 + timedelta(hours=h))},{400 + 100 * s:.1f},{150 + 120 * s:.1f}")
    (tmp / "carbon.csv").write_text("\n".join(rows) + "\n")


@pytest.mark.slow
def test_sigkill_mid_step_then_restart_leaves_a_consistent_ledger(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    job = {
        **JOB,
        "release": iso(now - timedelta(hours=1)),
        "deadline": iso(now + timedelta(hours=10)),
    }
    path = write_tiny(tmp_path, jobs=[job], nodes=6)
    _carbon_around_now(tmp_path)
    with (tmp_path / "control.toml").open("a") as fh:
        fh.write(
            "allow_actuation = true\n[daemon]\nmode = 'enforce'\n[daemon.http]\nenabled = false\n"
        )
    state = tmp_path / "state"
    cmd = [
        sys.executable,
        "-m",
        "greencpn.cli",
        "run",
        "--config",
        str(path),
        "--state-dir",
        str(state),
        "--fake-backends",
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=(tmp_path / "run.log").open("wb")
    )
    ledger = state / "steps.sqlite"
    try:
        deadline = time.monotonic() + 60
        while True:  # kill as soon as the start step is under way (a step row, not finished)
            if ledger.is_file():
                try:
                    with sqlite3.connect(ledger, timeout=1) as db:
                        row = db.execute(
                            "SELECT finished_at FROM steps ORDER BY id DESC LIMIT 1"
                        ).fetchone()
                    if row is not None and row[0] is None:
                        break
                except sqlite3.Error:
                    pass
            assert proc.poll() is None, (tmp_path / "run.log").read_text()
            assert time.monotonic() < deadline, "the start step never began"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    # restart (cron style): the controller recovers what the killed process left open
    once = subprocess.run([*cmd, "--once"], capture_output=True, text=True, timeout=120)
    assert once.returncode == 0, once.stderr
    db = sqlite3.connect(ledger)
    steps = db.execute("SELECT id, status, finished_at FROM steps ORDER BY id").fetchall()
    assert len(steps) == 2
    assert steps[0][1] == "interrupted" and steps[1][1] in ("ok", "degraded")
    open_rows = db.execute(
        "SELECT count(*) FROM actions WHERE status IN ('intended', 'started')"
    ).fetchone()[0]
    assert open_rows == 0
    st = json.loads((state / "daemon.json").read_text())
    assert st["steps"][-1]["reason"] == "once"


def test_json_logs_are_one_object_per_line(tmp_path: Path) -> None:
    path = write_tiny(tmp_path, jobs=[JOB])
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "greencpn.cli",
            "run",
            "--once",
            "--config",
            str(path),
            "--state-dir",
            str(tmp_path / "state"),
            "--fake-backends",
            "--log-format",
            "json",
            "--at",
            iso(START + timedelta(minutes=1)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    docs = [json.loads(line) for line in r.stderr.splitlines() if line.strip()]
    assert docs and all({"ts", "level", "logger", "msg"} <= set(d) for d in docs)
    step = [
        d for d in docs if d["logger"] == "greencpn.daemon" and d["msg"].startswith("step 1 (once)")
    ]
    assert step and step[0]["step_id"] == 1 and step[0]["status"] == "ok"
    assert all(d["ts"].endswith("Z") for d in docs)


def _spawned_workers(pid: int) -> list[int]:
    """Children of ``pid`` that are multiprocessing ``spawn`` workers (not its resource
    tracker), from /proc."""
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(x) for x in (task / "children").read_text().split()]
    out = []
    for k in kids:
        try:
            cmd = Path(f"/proc/{k}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmd and b"resource_tracker" not in cmd:
            out.append(k)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("baselines_worker", ["auto", "on"])
def test_greencpn_run_serves_http_with_the_real_controller_and_stops_on_sigterm(
    tmp_path: Path, baselines_worker: str
) -> None:
    """With ``[solver] baselines_worker = "on"`` the daemon keeps one worker process across its
    steps and stops it on SIGTERM (exit 0); "auto" on this tiny fleet starts none."""
    import requests
    from conftest import free_port

    now = datetime.now(UTC)
    job = {
        **JOB,
        "release": iso(now - timedelta(hours=1)),
        "deadline": iso(now + timedelta(hours=10)),
    }
    path = write_tiny(tmp_path, jobs=[job])
    path.write_text(
        path.read_text().replace(
            "mip_rel_gap = 0.0", f'mip_rel_gap = 0.0\nbaselines_worker = "{baselines_worker}"'
        )
    )
    _carbon_around_now(tmp_path)
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "greencpn.cli",
        "run",
        "--config",
        str(path),
        "--state-dir",
        str(tmp_path / "state"),
        "--fake-backends",
        "--http-port",
        str(port),
    ]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=(tmp_path / "run.log").open("wb")
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:  # ready once the start step finished
            try:
                if requests.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert proc.poll() is None, (tmp_path / "run.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "run.log").read_text()[-2000:]
            time.sleep(0.2)
        text = requests.get(f"{base}/metrics", timeout=5).text
        assert 'greencpn_nodes{pool="p1",state="on"}' in text
        assert 'greencpn_steps_total{reason="start",status="ok"} 1.0' in text
        assert requests.post(f"{base}/step", timeout=5).status_code == 202
        deadline = time.monotonic() + 60
        while (
            'greencpn_steps_total{reason="http",status="ok"} 1.0'
            not in requests.get(f"{base}/metrics", timeout=5).text
        ):
            assert time.monotonic() < deadline, "the HTTP-triggered step did not run"
            time.sleep(0.2)
        workers = _spawned_workers(proc.pid)
        assert len(workers) == (1 if baselines_worker == "on" else 0), workers
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, (tmp_path / "run.log").read_text()[-3000:]
        for pid in workers:
            deadline = time.monotonic() + 10
            while Path(f"/proc/{pid}").exists():
                assert time.monotonic() < deadline, f"worker {pid} outlived the daemon"
                time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = (tmp_path / "run.log").read_text()
    assert "SIGTERM: stopping" in log and "stopped" in log
