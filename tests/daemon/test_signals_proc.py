"""The real daemon process (fake controller, no etcd): SIGHUP reloads and steps, a bad config
on SIGHUP is refused and the old one kept, SIGTERM finishes or abandons the step, and
``on_exit = "restore"`` restores. Slot 60 min: only the start step and signal steps run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import HERE
from fake_controller import write_fleet


def _spawn(
    tmp: Path, control: str, delay: float = 0.0
) -> tuple[subprocess.Popen[bytes], Path, Path]:
    cfg = write_fleet(tmp / "fleet")
    (tmp / "fleet" / "control.toml").write_text(control + "\n[daemon.http]\nenabled = false\n")
    log = tmp / "actions.jsonl"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "run_fake_daemon.py"),
            str(cfg),
            str(tmp / "state"),
            str(log),
            "--delay",
            str(delay),
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp / "daemon.log").open("wb"),
    )
    return proc, cfg, log


def _steps(tmp: Path) -> list[dict[str, Any]]:
    p = tmp / "state" / "daemon.json"
    try:
        return list(json.loads(p.read_text())["steps"])
    except (OSError, ValueError, KeyError):
        return []


def _wait(cond: Any, timeout: float, what: str) -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _applied(log: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in log.read_text().splitlines()] if log.is_file() else []


@pytest.mark.slow
def test_sighup_reloads_and_steps_bad_config_is_refused_sigterm_restores(tmp_path: Path) -> None:
    proc, cfg, log = _spawn(
        tmp_path,
        "[control]\nallow_actuation = true\n[daemon]\nmode = 'enforce'\non_exit = 'restore'",
    )
    try:
        _wait(lambda: len(_steps(tmp_path)) == 1, 20, "the start step")
        assert _steps(tmp_path)[0]["reason"] == "start"
        proc.send_signal(signal.SIGHUP)
        _wait(lambda: len(_steps(tmp_path)) == 2, 10, "the SIGHUP step")
        assert _steps(tmp_path)[1]["reason"] == "sighup"
        good = cfg.read_text()
        cfg.write_text(good.replace('name = "p2"', 'name = "p2"\nbogus = 1'))
        proc.send_signal(signal.SIGHUP)
        _wait(lambda: len(_steps(tmp_path)) == 3, 10, "the step after a bad reload")
        st = json.loads((tmp_path / "state" / "daemon.json").read_text())
        assert st["reload"]["ok"] is False and "bogus" in st["reload"]["error"]
        err = (tmp_path / "daemon.log").read_text()
        assert "config reload refused, keeping the previous config" in err and "bogus" in err
        assert st["steps"][-1]["status"] == "ok"  # stepped on the old config
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    rows = _applied(log)
    assert [r["kind"] for r in rows] == ["set_cap"] * 6 + ["restore_cap"] * 2
    assert "on_exit = restore" in (tmp_path / "daemon.log").read_text()


@pytest.mark.slow
def test_sigterm_with_finish_lets_the_running_step_end(tmp_path: Path) -> None:
    proc, _, log = _spawn(
        tmp_path, "[control]\nallow_actuation = true\n[daemon]\nmode = 'enforce'", delay=1.0
    )
    try:
        _wait(lambda: len(_applied(log)) == 1, 20, "the first action")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert [r["target"] for r in _applied(log)] == ["p1", "p2"]  # both actions done
    assert _steps(tmp_path)[-1]["actions"] == {"done": 2}


@pytest.mark.slow
def test_sigterm_with_abandon_stops_acting_at_the_next_action(tmp_path: Path) -> None:
    proc, _, log = _spawn(
        tmp_path,
        "[control]\nallow_actuation = true\n[daemon]\nmode = 'enforce'\non_sigterm = 'abandon'",
        delay=1.0,
    )
    try:
        _wait(lambda: len(_applied(log)) == 1, 20, "the first action")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert [r["target"] for r in _applied(log)] == ["p1"]
    last = _steps(tmp_path)[-1]
    assert last["actions"] == {"done": 1, "skipped": 1}
    assert "on_sigterm = abandon" in last["errors"][0]["message"]
