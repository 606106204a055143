"""Daemon overhead around a step, scheduler punctuality, fence cost and etcd failover time.

    python bench/bench_daemon.py [--write] [--quick]

* **Overhead around a step** — ``Daemon.run_step`` minus ``Controller.step`` (metrics export,
  savings, state file write with fsync-free atomic replace, leader state), with (a) a
  controller whose step costs nothing, 1000 steps, and (b) the real Controller on the
  controller tests' tiny fleet (2 pools × 4 nodes, fake nodes/GPUs, simulated clock), 24 steps.
* **Scheduler punctuality** — the real APScheduler BackgroundScheduler with the slot trigger
  at a 1 s period: how late each step starts after its fire time (wall clock).
* **Fence** — one ``Elector.fence()`` call (a linearizable GET of the leader key) on a real
  etcd 3.4 on 127.0.0.1.
* **Failover** — a leader process (``Elector.start()`` in its own Python) is SIGKILLed; time
  until the follower (this process, campaigning every TTL/3) holds the key; and the same when
  the leader resigns (revokes its lease, as ``greencpn run`` does on SIGTERM).

Writes bench/results/daemon.md with ``--write``.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "daemon"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stats(xs: list[float]) -> tuple[float, float, float, float]:
    xs = sorted(xs)
    p95 = xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]
    return statistics.median(xs), p95, xs[0], xs[-1]


# ----------------------------------------------------------------------------- overhead


class _Timed:
    """Wraps a controller: remembers how long each step() took."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.last_s = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def step(self) -> Any:
        t = time.perf_counter()
        r = self.inner.step()
        self.last_s = time.perf_counter() - t
        return r


def overhead_fake(tmp: Path, n: int) -> list[float]:
    from fake_controller import FakeController, write_fleet

    from greencpn.clock import SimClock
    from greencpn.daemon.core import Daemon

    cfg = write_fleet(tmp / "fleet")
    clock = SimClock(datetime(2026, 3, 2, tzinfo=UTC))
    d = Daemon(
        cfg,
        state_dir=tmp / "state",
        clock=clock,
        controller_factory=lambda p, **kw: _Timed(FakeController(p, **kw)),
    )
    out = []
    for _ in range(n):
        clock.advance(timedelta(hours=1))
        t = time.perf_counter()
        d.run_step()
        out.append((time.perf_counter() - t - d.controller.last_s) * 1000)
    return out


def rss_growth(tmp: Path, n: int) -> tuple[float, float, int]:
    """RSS (MiB) after 10 % of ``n`` steps (warm-up) and after ``n``; daemon.json bytes.
    The fake controller's own step list is cleared each step so only the daemon accumulates."""
    from fake_controller import FakeController, write_fleet

    from greencpn.clock import SimClock
    from greencpn.daemon.core import Daemon

    def rss_mib() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    cfg = write_fleet(tmp / "fleet")
    clock = SimClock(datetime(2026, 3, 2, tzinfo=UTC))
    d = Daemon(
        cfg,
        state_dir=tmp / "state",
        clock=clock,
        controller_factory=lambda p, **kw: FakeController(p, **kw),
    )
    warm = 0.0
    for i in range(n):
        clock.advance(timedelta(hours=1))
        d.run_step()
        d.controller.steps.clear()
        if i + 1 == n // 10:
            warm = rss_mib()
    return warm, rss_mib(), (tmp / "state" / "daemon.json").stat().st_size


def overhead_real(tmp: Path, n: int) -> tuple[list[float], list[float]]:
    from greencpn.clock import SimClock
    from greencpn.config import load_config
    from greencpn.controller import Controller
    from greencpn.controller.fakes import FakeFleet
    from greencpn.daemon.core import Daemon
    from tests.controller.conftest import START, SimWorld, trace_jobs, write_tiny

    tmp.mkdir(parents=True, exist_ok=True)
    path = write_tiny(tmp, days=4, slots=12, time_limit_s=10)
    with (tmp / "control.toml").open("a") as fh:
        fh.write("allow_actuation = true\n[daemon]\nmode = 'enforce'\n")
    clock = SimClock(START + timedelta(minutes=1))
    cfg = load_config(path)
    fleet = FakeFleet(cfg, clock)
    world = SimWorld(cfg, fleet, clock, trace_jobs(16, hours=24, seed=3))
    d = Daemon(
        path,
        state_dir=tmp / "state",
        clock=clock,
        backends=fleet.backends,
        controller_factory=lambda p, **kw: _Timed(Controller(p, **kw)),
        controller_kwargs={
            "queue": world,
            "job_actuator": world,
            "sleep": lambda s: clock.advance(timedelta(seconds=s)),
        },
    )
    over, step = [], []
    for _ in range(n):
        t = time.perf_counter()
        d.run_step()
        total = time.perf_counter() - t
        over.append((total - d.controller.last_s) * 1000)
        step.append(d.controller.last_s * 1000)
        clock.advance(timedelta(hours=1))
    return over, step


# ----------------------------------------------------------------------------- scheduler


def scheduler_lateness(tmp: Path, fires: int) -> list[float]:
    from fake_controller import FakeController, write_fleet

    from greencpn.clock import SystemClock
    from greencpn.daemon.core import Daemon

    cfg = write_fleet(tmp / "sched")
    (tmp / "sched" / "control.toml").write_text(
        "[daemon]\nperiod_s = 1\noffset_s = 0\n[daemon.http]\nenabled = false\n"
    )
    late: list[float] = []
    done = threading.Event()
    d = Daemon(
        cfg,
        state_dir=tmp / "sched-state",
        clock=SystemClock(),
        controller_factory=lambda p, **kw: FakeController(p, **kw),
    )
    inner = d.run_step

    def timed(reason: str = "schedule") -> Any:
        now = time.time()
        if reason == "schedule":
            late.append((now - math.floor(now)) * 1000)  # fires are on whole seconds
            if len(late) >= fires:
                done.set()
        return inner(reason)

    d.run_step = timed  # type: ignore[method-assign]
    d.start_background()
    done.wait(fires + 10)
    d.shutdown("bench over")
    return late


# ----------------------------------------------------------------------------- etcd


def _start_etcd(tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    import requests

    port, peer = _free_port(), _free_port()
    proc = subprocess.Popen(
        [
            "etcd",
            "--data-dir",
            str(tmp / "etcd"),
            "--name",
            "b1",
            "--listen-client-urls",
            f"http://127.0.0.1:{port}",
            "--advertise-client-urls",
            f"http://127.0.0.1:{port}",
            "--listen-peer-urls",
            f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls",
            f"http://127.0.0.1:{peer}",
            "--initial-cluster",
            f"b1=http://127.0.0.1:{peer}",
            "--log-level",
            "warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    t0 = time.monotonic()
    while True:
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).ok:
                return proc, port
        except requests.RequestException:
            pass
        if time.monotonic() - t0 > 20:
            proc.kill()
            raise RuntimeError("etcd did not start")
        time.sleep(0.1)


LEADER = textwrap.dedent(
    """
    import logging, sys, time
    logging.disable(logging.WARNING)
    sys.path.insert(0, {root!r})
    from greencpn.daemon.leader import Elector
    from greencpn.daemon.settings import EtcdSettings
    e = Elector(EtcdSettings(endpoints=["127.0.0.1:{port}"], key={key!r}, ttl_s={ttl}), name="L")
    e.start()
    print("leader" if e.state().is_leader else "follower", flush=True)
    if sys.argv[1] == "resign":
        sys.stdin.readline()
        e.stop(resign=True)
        print("resigned", flush=True)
    time.sleep(3600)
    """
)


def failover(port: int, ttl: int, how: str, key: str) -> float:
    from greencpn.daemon.leader import Elector
    from greencpn.daemon.settings import EtcdSettings

    code = LEADER.format(root=str(ROOT), port=port, key=key, ttl=ttl)
    leader = subprocess.Popen(
        [sys.executable, "-c", code, how], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert leader.stdout is not None and leader.stdin is not None
    assert leader.stdout.readline().strip() == "leader"
    follower = Elector(EtcdSettings(endpoints=[f"127.0.0.1:{port}"], key=key, ttl_s=ttl), name="F")
    follower.start()
    assert not follower.state().is_leader
    time.sleep(ttl * 0.5)  # somewhere inside a refresh period
    if how == "kill":
        t0 = time.monotonic()
        leader.send_signal(signal.SIGKILL)
    else:
        t0 = time.monotonic()
        leader.stdin.write("\n")
        leader.stdin.flush()
        leader.stdout.readline()
    while not follower.state().is_leader:
        time.sleep(0.005)
        if time.monotonic() - t0 > 10 * ttl:
            raise RuntimeError("no failover")
    took = time.monotonic() - t0
    follower.stop(resign=True)
    leader.kill()
    leader.wait()
    return took


def fence_cost(port: int, n: int) -> list[float]:
    from greencpn.daemon.leader import Elector
    from greencpn.daemon.settings import EtcdSettings

    e = Elector(
        EtcdSettings(endpoints=[f"127.0.0.1:{port}"], key="/bench/fence", ttl_s=10), name="F"
    )
    assert e.campaign_once()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        e.fence()
        out.append((time.perf_counter() - t) * 1000)
    e.stop()
    return out


# ----------------------------------------------------------------------------- main


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--write", action="store_true", help="write bench/results/daemon.md")
    ap.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    args = ap.parse_args()
    q = args.quick
    import logging

    logging.disable(logging.WARNING)
    load0 = os.getloadavg()[0]
    rows: list[tuple[str, list[float]]] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        rows.append(
            (
                "daemon overhead around a step, fake controller (no-op step)",
                overhead_fake(tmp / "a", 100 if q else 1000),
            )
        )
        warm, end, state_bytes = rss_growth(tmp / "r", 1000 if q else 10000)
        notes.append(
            f"Memory: {1000 if q else 10000} daemon steps (fake controller, simulated hours): RSS "
            f"{warm:.1f} MiB after the first 10 % (warm-up) and {end:.1f} MiB at the end "
            f"(growth {100 * (end - warm) / warm:+.1f} % of the warm-up RSS); daemon.json "
            f"{state_bytes / 1024:.1f} KiB (the last 50 steps, 96 slots of savings: bounded)."
        )
        over, step = overhead_real(tmp / "b", 6 if q else 24)
        rows.append(("daemon overhead around a step, real Controller, tiny fleet", over))
        rows.append(("  (for scale) the real Controller.step itself, same run", step))
        rows.append(
            (
                "scheduler: step start after its fire time (1 s period)",
                scheduler_lateness(tmp / "c", 5 if q else 20),
            )
        )
        if shutil.which("etcd"):
            proc, port = _start_etcd(tmp)
            try:
                rows.append(
                    (
                        "Elector.fence(): linearizable GET on etcd",
                        fence_cost(port, 100 if q else 1000),
                    )
                )
                reps = 2 if q else 5
                for ttl in (2, 5):
                    kill = [
                        failover(port, ttl, "kill", f"/bench/k{ttl}/{i}") * 1000
                        for i in range(reps)
                    ]
                    rows.append((f"failover after SIGKILL of the leader, ttl_s = {ttl}", kill))
                res = [failover(port, 2, "resign", f"/bench/r/{i}") * 1000 for i in range(reps)]
                rows.append(("failover after the leader resigns (SIGTERM path), ttl_s = 2", res))
            finally:
                proc.terminate()
                proc.wait(timeout=10)
        else:
            notes.append("etcd not installed: fence and failover not measured.")
    load1 = os.getloadavg()[0]
    lines = [
        "## greencpn run: daemon overhead, scheduler punctuality, fence and failover",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by `bench/bench_daemon.py` on this machine: "
        f"{os.cpu_count()} cores (`nproc`), {platform.machine()}, Python {platform.python_version()}; "
        f"1-minute load average {load0:.1f} before and {load1:.1f} after (the machine is shared). "
        "Overhead = wall time of `Daemon.run_step` minus the controller's own `step()` in the same "
        "call: metrics export, savings, the state file (daemon.json, atomic replace), leader "
        "state. The tiny fleet is the controller tests' (2 sites, 2 pools × 4 nodes, fake nodes and "
        "GPUs, simulated clock, enforce mode). Scheduler lateness is wall clock, real "
        "APScheduler BackgroundScheduler. etcd 3.4 runs on 127.0.0.1; failover is from the "
        "SIGKILL (or the resign) to the follower holding the key, the follower campaigning every "
        "TTL/3 as `greencpn run` does. The controller engineer measures the step itself "
        "(bench/results/controller.md).",
        "",
        "Times in ms.",
        "",
        "| what | n | median | p95 | min | max |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, xs in rows:
        med, p95, lo, hi = _stats(xs)
        lines.append(f"| {name} | {len(xs)} | {med:.2f} | {p95:.2f} | {lo:.2f} | {hi:.2f} |")
    if notes:
        lines += ["", *notes]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        out = ROOT / "bench" / "results" / "daemon.md"
        out.write_text(text)
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
