"""Benchmark ``greencpn apply`` overhead on the bundled example fleet (8 pools, 224 nodes,
1792 GPUs) with in-memory fake nodes and GPUs and a simulated clock (no real waiting), so it
measures greencpn itself: observing, diffing, choosing nodes, and the SQLite ledger.

Run: .venv/bin/python bench/bench_apply.py [--repeats 20] [--write bench/results/apply.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from greencpn.actuate.apply import Backends, apply_plan
from greencpn.actuate.base import NodePower
from greencpn.actuate.fake_fleet import fake_gpus, one_slot_plan, plan_pool
from greencpn.actuate.fake_nodes import FakeNodeHook
from greencpn.actuate.hostlist import expand
from greencpn.actuate.safety import ControlSettings
from greencpn.clock import SimClock
from greencpn.config import load_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "data" / "example" / "fleet.toml"


def setup():  # type: ignore[no-untyped-def]
    cfg = load_config(EXAMPLE)
    t0 = cfg.raw.horizon.start or datetime(2023, 4, 25, tzinfo=UTC)
    clock = SimClock(t0 + timedelta(minutes=5))
    hooks, node_fleet, plan_pools = {}, {}, []
    for k, p in enumerate(cfg.pools):
        gm = cfg.gpu_models[p.gpu_model.lower()]
        nodes = expand(p.hostlist or "")
        hooks[p.name] = FakeNodeHook(nodes, clock, boot_delay_s=p.boot_time_min * 60)
        for n in nodes[: len(nodes) // 2]:
            hooks[p.name].set(n, power=NodePower.OFF)
        fleet = fake_gpus(gm, p.gpus_per_node)
        for n in nodes:
            node_fleet[n] = fleet
        target = (3 * p.nodes) // 4 if k % 2 == 0 else p.nodes // 4
        plan_pools.append(plan_pool(p, gm, target, gm.levels[1].cap_w))
    plan = one_slot_plan(EXAMPLE, t0, plan_pools)
    backends = Backends(hooks=hooks, gpus=lambda n: node_fleet[n].backend(n))
    return cfg, clock, plan, backends


def measure(repeats: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"dry": [], "act": [], "again": []}
    settings = ControlSettings(
        allow_actuation=True,
        max_power_ops_per_min=1000,
        power_ops_burst=1000,
        drain_timeout_s=60,
        poll_interval_s=15,
    )
    for _ in range(repeats):
        cfg, clock, plan, backends = setup()
        with tempfile.TemporaryDirectory() as tmp:
            sleep = lambda s, c=clock: c.advance(timedelta(seconds=s))  # noqa: E731
            kw = dict(clock=clock, state_dir=tmp, settings=settings, sleep=sleep)
            t = time.perf_counter()
            apply_plan(plan, "now", cfg, backends, dry_run=True, **kw)  # type: ignore[arg-type]
            out["dry"].append(time.perf_counter() - t)
            t = time.perf_counter()
            rep = apply_plan(plan, "now", cfg, backends, **kw)  # type: ignore[arg-type]
            out["act"].append(time.perf_counter() - t)
            assert rep.outcome == "applied", rep.format()
            t = time.perf_counter()
            rep = apply_plan(plan, "now", cfg, backends, **kw)  # type: ignore[arg-type]
            out["again"].append(time.perf_counter() - t)
            assert rep.outcome == "nothing_to_do", rep.format()
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--write", default=None)
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    res = measure(args.repeats)
    load_after = os.getloadavg()[0]
    cfg = setup()[0]
    n_nodes = sum(p.nodes for p in cfg.pools)
    n_gpus = sum(p.nodes * p.gpus_per_node for p in cfg.pools)
    names = {
        "dry": "dry run: observe + diff (no ledger writes)",
        "act": "apply: caps, drain, off, on, boot, resume, ledger (fsync per step)",
        "again": "re-apply same plan: nothing to do",
    }
    lines = [
        "## greencpn apply: overhead on the example fleet",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d} by `bench/bench_apply.py` on this machine: "
        f"{os.cpu_count()} cores (`nproc`), {platform.machine()}, Python {platform.python_version()}. "
        f"Fleet: data/example/fleet.toml, {len(cfg.pools)} pools, {n_nodes} nodes, {n_gpus} GPUs, "
        "half the nodes off at start; the plan sets alternate pools to 3/4 and 1/4 of their nodes "
        "on and every GPU to the model's second cap level. Nodes and GPUs are in-memory fakes and "
        "the clock is simulated, so boot and drain waits cost nothing: this is greencpn's own "
        "time (observation, node choice, GPU reads/writes through the shared BaseGpuBackend logic, "
        "SQLite ledger in a temp dir with synchronous=FULL). Real hooks (scontrol, IPMI) and real "
        "boots add their own time on top. The machine is shared with other jobs.",
        "",
        f"{args.repeats} repeats, times in ms. 1-minute load average {load_before:.1f} before and "
        f"{load_after:.1f} after the run (other workers' jobs), so the spread is mostly the machine.",
        "",
        "| step | median | p95 | min | max |",
        "|---|---:|---:|---:|---:|",
    ]
    for key, label in names.items():
        xs = sorted(v * 1000 for v in res[key])
        p95 = xs[min(len(xs) - 1, int(round(0.95 * (len(xs) - 1))))]
        lines.append(
            f"| {label} | {statistics.median(xs):.1f} | {p95:.1f} | {xs[0]:.1f} | {xs[-1]:.1f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        Path(args.write).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
