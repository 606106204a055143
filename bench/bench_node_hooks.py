"""Benchmark the node-hook building blocks on this machine.

* hostlist: expand ``gpu[000001-100000]`` and compress 100,000 shuffled names;
* command hook: ``power_on`` of 64 nodes (one status call + one action call, real ``sh``);
* ipmi hook: ``status`` of 1 and 8 nodes, and a full soft power off, against real ``ipmi_sim``
  BMCs on 127.0.0.1 (skipped when openipmi/ipmitool are missing).

Run: .venv/bin/python bench/bench_node_hooks.py [--repeats 10] [--write bench/results/actuate_nodes.md]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from greencpn.actuate.hooks import make_hook
from greencpn.actuate.hostlist import compress, expand

ROOT = Path(__file__).resolve().parents[1]


def timed(fn: Callable[[], object], repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def row(name: str, ms: list[float]) -> str:
    ms = sorted(ms)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return (
        f"| {name} | {statistics.median(ms):.1f} | {p95:.1f} | {ms[0]:.1f} | {ms[-1]:.1f} "
        f"| {len(ms)} |"
    )


def bench_hostlist(repeats: int) -> list[str]:
    names = [f"gpu{i:06d}" for i in range(1, 100_001)]
    shuffled = names[:]
    random.Random(1).shuffle(shuffled)
    assert expand("gpu[000001-100000]") == names
    assert compress(shuffled) == "gpu[000001-100000]"
    return [
        row(
            "expand `gpu[000001-100000]` (100k names)",
            timed(lambda: expand("gpu[000001-100000]"), repeats),
        ),
        row("compress 100k shuffled names", timed(lambda: compress(shuffled), repeats)),
    ]


def bench_command(repeats: int, tmp: Path) -> list[str]:
    script = tmp / "power.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    status = tmp / "status.sh"
    status.write_text("#!/bin/sh\nfor n in $(echo \"$1\" | tr -d 'n[]' | tr ',' ' '); do :; done\n")
    status.chmod(0o755)
    hook = make_hook({"kind": "command", "power_on": str(script), "status": str(status)})
    nodes = [f"n{i:02d}" for i in range(64)]
    return [
        row(
            "command hook power_on, 64 nodes (status + 1 script call)",
            timed(lambda: hook.power_on(nodes), repeats),
        )
    ]


def bench_ipmi(repeats: int, tmp: Path) -> list[str]:
    if not (shutil.which("ipmi_sim") and shutil.which("ipmitool")):
        return ["| ipmi (skipped: ipmi_sim/ipmitool missing) | | | | | |"]
    spec = importlib.util.spec_from_file_location(
        "ipmi_bmc_sim_for_bench", ROOT / "tests" / "actuate" / "nodes" / "test_ipmi_hook_bmc_sim.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    bmcs = {f"n{i}": mod._start_bmc(tmp, f"n{i}") for i in range(8)}
    os.environ["GREENCPN_BENCH_IPMI_PW"] = mod.PASSWORD
    try:
        time.sleep(0.3)
        hook = make_hook(
            {
                "kind": "ipmi",
                "user": "admin",
                "password_env": "GREENCPN_BENCH_IPMI_PW",
                "bmcs": {n: f"127.0.0.1:{b.port}" for n, b in bmcs.items()},
                "poll_interval_s": 0.05,
                "soft_off_timeout_s": 10,
            }
        )
        assert hook.status(["n0"])[0].power.value == "on"
        serial = make_hook(
            {
                "kind": "ipmi",
                "user": "admin",
                "parallel": 1,
                "password_env": "GREENCPN_BENCH_IPMI_PW",
                "bmcs": {n: f"127.0.0.1:{b.port}" for n, b in bmcs.items()},
            }
        )
        rows = [
            row(
                "ipmi status, 1 node (1 ipmitool call)", timed(lambda: hook.status(["n0"]), repeats)
            ),
            row(
                "ipmi status, 8 nodes, parallel=1 (one BMC at a time)",
                timed(lambda: serial.status(list(bmcs)), repeats),
            ),
            row(
                "ipmi status, 8 nodes, parallel=16 (default)",
                timed(lambda: hook.status(list(bmcs)), repeats),
            ),
        ]

        def cycle() -> None:
            hook.power_off(["n1"])
            bmcs["n1"].set_power(True)

        rows.append(
            row("ipmi power_off 1 node: status + soft + poll until off", timed(cycle, repeats))
        )
        return rows
    finally:
        for b in bmcs.values():
            b.proc.send_signal(signal.SIGTERM)
            b.proc.wait(timeout=5)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--write", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rows = bench_hostlist(args.repeats) + bench_command(args.repeats, tmp)
        rows += bench_ipmi(args.repeats, tmp)
    load = os.getloadavg()
    head = (
        "## Node hooks: hostlists, command and IPMI call costs\n\n"
        f"Measured {datetime.now(UTC):%Y-%m-%d} by `bench/bench_node_hooks.py` on this machine: "
        f"{os.cpu_count()} cores (`nproc`), {platform.machine()}, Python {platform.python_version()}. "
        "IPMI against real `ipmi_sim` BMCs on 127.0.0.1 (`ipmitool -I lanplus -C 3`); the "
        f"machine is shared with other jobs (load average {load[0]:.1f} / {load[1]:.1f} / "
        f"{load[2]:.1f} at the end of the run), so times are inflated and noisy. Real BMCs over a "
        "network answer slower than a local simulator.\n\n"
        f"{args.repeats} repeats, times in ms.\n\n"
        "| step | median | p95 | min | max | n |\n|---|---:|---:|---:|---:|---:|\n"
    )
    text = head + "\n".join(rows) + "\n"
    print(text)
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
