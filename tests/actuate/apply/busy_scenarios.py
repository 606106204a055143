"""A tiny cluster kept in files, driven by a REAL ``command`` hook, and the busy-node scenarios
of issue #9 run against it through ``greencpn apply`` (the CLI's ``main``).

The cluster script (``cluster.py``) keeps one JSON file per node (``power``, ``drained``,
``jobs``, optional ``service``); ``power_off`` of a node with jobs > 0 (or a service such as a
database that no scheduler sees) "kills" them: it appends ``<node> <jobs|service>`` to
``killed.log``. So "a busy node was powered off" is read from what the script saw, not from
greencpn's own account.

Used by tests/actuate/apply/test_busy_nodes.py (each scenario must kill 0 jobs) and by
bench/bench_safety.py (counts the scenarios in which a busy node was powered off). Loaded by
path (pytest runs with --import-mode=importlib): see :func:`load`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

CLUSTER = r"""
import json, os, sys, time
from pathlib import Path
from greencpn.actuate.hostlist import expand
state = Path(sys.argv[1])
op, nodes = sys.argv[2], expand(sys.argv[3])
report_jobs = os.environ.get("CLUSTER_REPORT_JOBS", "1") == "1"
with open(state / "calls.log", "a") as f:
    f.write(f"{op} {sys.argv[3]} pid={os.getpid()}\n")
if op == "power_off":
    time.sleep(float(os.environ.get("CLUSTER_OFF_DELAY_S", "0")))
for n in nodes:
    p = state / f"{n}.json"
    if not p.exists():
        continue  # not a node of this cluster: status omits it, actions do nothing
    s = json.loads(p.read_text())
    if op == "status":
        words = [n, s["power"]]
        if s["drained"]:
            words.append("drained")
        if report_jobs and s["power"] == "on":
            words.append(f"jobs={s['jobs']}")
        print(" ".join(words))
        continue
    if op == "power_off" and s["power"] != "off":
        if s["jobs"] or s.get("service"):
            with open(state / "killed.log", "a") as f:
                f.write(f"{n} {s['jobs'] or s['service']}\n")
        s.update(power="off", jobs=0)
    elif op == "power_on":
        s["power"] = "on"
    elif op == "drain":
        s["drained"] = True
    elif op == "resume":
        s["drained"] = False
    tmp = p.with_name(p.name + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(s))
    os.replace(tmp, p)  # atomic: a reader never sees a half-written state file
"""


def load() -> Any:
    """This module, imported by path (for tests and the bench)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("busy_scenarios", Path(__file__))
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("busy_scenarios", mod)
    spec.loader.exec_module(mod)
    return mod


ROOT = Path(os.environ.get("BUSY_SCENARIOS_GREENCPN") or Path(__file__).resolve().parents[3])
"""The greencpn source tree the hook scripts and apply subprocesses import (the bench points it
at an older checkout to count what that code did)."""


@dataclass
class Cluster:
    """Nodes in files + a fleet config whose pool uses the cluster script as its hook."""

    tmp: Path
    state: Path
    config: Path
    env: dict[str, str] = field(default_factory=dict)

    def node(self, n: str) -> dict[str, Any]:
        return dict(json.loads((self.state / f"{n}.json").read_text()))

    def set(self, n: str, **kw: Any) -> None:
        s = self.node(n) if (self.state / f"{n}.json").exists() else {}
        s = {"power": "on", "drained": False, "jobs": 0, **s, **kw}
        tmp = self.state / f"{n}.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(s))
        os.replace(tmp, self.state / f"{n}.json")  # atomic, as the hook script writes

    def killed(self) -> list[str]:
        log = self.state / "killed.log"
        return log.read_text().split("\n")[:-1] if log.exists() else []

    def calls(self, *ops: str) -> list[str]:
        log = self.state / "calls.log"
        lines = log.read_text().splitlines() if log.exists() else []
        return [ln.rsplit(" pid=", 1)[0] for ln in lines if not ops or ln.split()[0] in ops]


def hook_table(cluster_py: Path, state: Path, ops: tuple[str, ...]) -> dict[str, list[str]]:
    cmd = [sys.executable, str(cluster_py), str(state)]
    return {op: [*cmd, op] for op in ops}


def toml_value(v: Any) -> str:
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    return json.dumps(v)


def make_cluster(
    tmp: Path,
    *,
    nodes: dict[str, int],
    hostlist: str | None = None,
    hook: dict[str, Any] | None = None,
    ops: tuple[str, ...] = ("power_on", "power_off", "drain", "resume", "status"),
    extra_pool: str = "",
    spares: int = 0,
) -> Cluster:
    """``nodes``: node name -> running jobs (all on). ``hook``: the hook table (default: the
    cluster script for ``ops``); the string ``"@cluster"`` in it is replaced by that table."""
    tmp.mkdir(parents=True, exist_ok=True)
    state = tmp / "cluster"
    state.mkdir()
    cluster_py = tmp / "cluster.py"
    cluster_py.write_text(CLUSTER)
    table = hook_table(cluster_py, state, ops)
    if hook is None:
        hook = {"kind": "command", **table, "timeout_s": 60}
    else:
        hook = {
            k: ({"kind": "command", **table} if v == "@cluster" else v) for k, v in hook.items()
        }
    (tmp / "carbon.csv").write_text("timestamp,DE\n")
    cfg = tmp / "fleet.toml"
    hl = hostlist or ",".join(nodes)
    cfg.write_text(
        f"""
name = "busy"
[carbon]
file = "carbon.csv"
[[sites]]
name = "s1"
zone = "DE"
pue = 1.2
[[pools]]
name = "p"
site = "s1"
nodes = {len(nodes)}
gpu_model = "A100-SXM4-40GB"
gpus_per_node = 1
node_idle_w = 400.0
spares = {spares}
hostlist = "{hl}"
hook = {toml_value(hook)}
{extra_pool}"""
    )
    # short waits: a drained node still busy after 1 s is resumed and skipped
    (tmp / "control.toml").write_text(
        "[control]\ndrain_timeout_s = 1\npoll_interval_s = 0.2\nboot_timeout_min_s = 0\n"
    )
    c = Cluster(tmp, state, cfg)
    for n, jobs in nodes.items():
        c.set(n, jobs=jobs)
    return c


def write_plan(
    path: Path,
    config: Path,
    pools: list[dict[str, Any]],
    *,
    start: datetime,
    slots: int = 2,
) -> Path:
    """A plan file: ``pools`` = [{name, nodes_on: [per slot], ...extra keys}]."""
    starts = [start + timedelta(hours=i) for i in range(slots)]
    out = []
    for p in pools:
        p = dict(p)
        on = p.pop("nodes_on")
        out.append(
            {
                "site": "s1",
                "gpu_model": "A100-SXM4-40GB",
                "gpus_per_node": 1,
                "power_limit_min_w": 100,
                "power_limit_max_w": 400,
                "power_limit_default_w": 400,
                **p,
                "slots": [
                    {"slot": i, "nodes_on": on[i], "power_cap_w": None} for i in range(slots)
                ],
            }
        )
    plan = {
        "schema": "greencpn.plan/1",
        "config": str(config),
        "horizon": {
            "start": starts[0].isoformat().replace("+00:00", "Z"),
            "slot_minutes": 60,
            "slots": slots,
            "slot_starts": [s.isoformat().replace("+00:00", "Z") for s in starts],
        },
        "pools": out,
    }
    path.write_text(json.dumps(plan))
    return path


def run_cli(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``greencpn <argv>`` in this process; returns (exit status, stdout, stderr)."""
    from greencpn.cli import main

    out, err = io.StringIO(), io.StringIO()
    old = {k: os.environ.get(k) for k in env or {}}
    os.environ.update(env or {})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return rc, out.getvalue(), err.getvalue()


def this_hour() -> datetime:
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


# --------------------------------------------------------------------------- the scenarios


@dataclass
class Outcome:
    name: str
    busy_powered_off: list[str]  # "<node> <jobs>" lines from the cluster's killed.log
    exit_code: int
    output: str


def _apply(
    c: Cluster, plan: Path, *extra: str, env: dict[str, str] | None = None
) -> tuple[int, str]:
    rc, out, err = run_cli(
        ["apply", str(plan), "--state-dir", str(c.tmp / "state"), "--allow-actuation", *extra],
        env={"PYTHONPATH": str(ROOT), **(env or {})},
    )
    return rc, out + err


def scenario_command_hook_without_job_counts(tmp: Path) -> Outcome:
    """#9.1: the status script prints no ``jobs=N``; both nodes run jobs; the plan wants 0 on."""
    c = make_cluster(tmp, nodes={"n1": 2, "n2": 1})
    plan = write_plan(
        tmp / "plan.json",
        c.config,
        [{"name": "p", "nodes": 2, "nodes_on": [0, 0]}],
        start=this_hour(),
    )
    rc, out = _apply(c, plan, "--slot", "now", env={"CLUSTER_REPORT_JOBS": "0"})
    return Outcome("#9.1 command hook, status without jobs=N", c.killed(), rc, out)


def scenario_wol_nesting_a_command_hook(tmp: Path) -> Outcome:
    """#9.1: a ``wol`` hook whose nested ``off`` command hook reports no job counts."""
    c = make_cluster(
        tmp,
        nodes={"n1": 3, "n2": 0},
        hook={
            "kind": "wol",
            "macs": {"n1": "02:00:00:00:00:01", "n2": "02:00:00:00:00:02"},
            "address": "127.0.0.1",
            "port": 9,
            "off": "@cluster",
        },
    )
    plan = write_plan(
        tmp / "plan.json",
        c.config,
        [{"name": "p", "nodes": 2, "nodes_on": [0, 0]}],
        start=this_hour(),
    )
    rc, out = _apply(c, plan, "--slot", "now", env={"CLUSTER_REPORT_JOBS": "0"})
    return Outcome("#9.1 wol hook nesting a command hook without jobs=N", c.killed(), rc, out)


def scenario_plan_names_nodes_the_config_does_not(tmp: Path) -> Outcome:
    """#9.5: a stale/edited plan.json carries a hostlist with ``prod-db2`` (busy, not in the
    config); the config lists n1,n2."""
    c = make_cluster(tmp, nodes={"n1": 0, "n2": 0})
    c.set("prod-db2", jobs=0, service="database")  # busy with work no scheduler sees
    plan = write_plan(
        tmp / "plan.json",
        c.config,
        [{"name": "p", "nodes": 3, "hostlist": "n1,n2,prod-db2", "nodes_on": [0, 0]}],
        start=this_hour(),
    )
    rc, out = _apply(c, plan, "--slot", "now")
    return Outcome("#9.5 plan hostlist naming a node the config does not list", c.killed(), rc, out)


def scenario_duplicated_pool_in_plan(tmp: Path) -> Outcome:
    """#9.5: the plan lists pool ``p`` twice, the second copy with another target."""
    c = make_cluster(tmp, nodes={"n1": 2, "n2": 2})
    plan = write_plan(
        tmp / "plan.json",
        c.config,
        [
            {"name": "p", "nodes": 2, "nodes_on": [2, 2]},
            {"name": "p", "nodes": 2, "nodes_on": [0, 0]},
        ],
        start=this_hour(),
    )
    rc, out = _apply(c, plan, "--slot", "now")
    return Outcome("#9.5 plan with a duplicated pool", c.killed(), rc, out)


def scenario_ipmi_nesting_a_command_hook(tmp: Path, bmcs: dict[str, Any], pw_env: str) -> Outcome:
    """#9.1: real BMCs (``bmcs``: node -> object with ``.port`` of its ipmi_sim and ``.power``,
    "1" on / "0" off) + a nested command hook whose status prints no jobs=N; both nodes busy."""
    bmc_ports = {n: b.port for n, b in bmcs.items()}
    c = make_cluster(
        tmp,
        nodes={n: 2 for n in bmc_ports},
        hook={
            "kind": "ipmi",
            "user": "admin",
            "password_env": pw_env,
            "bmcs": {n: f"127.0.0.1:{p}" for n, p in bmc_ports.items()},
            "timeout_s": 10,
            "soft_off_timeout_s": 5,
            "poll_interval_s": 0.1,
            "drain_hook": "@cluster",
        },
    )
    plan = write_plan(
        tmp / "plan.json",
        c.config,
        [{"name": "p", "nodes": len(bmc_ports), "nodes_on": [0, 0]}],
        start=this_hour(),
    )
    rc, out = _apply(c, plan, "--slot", "now", env={"CLUSTER_REPORT_JOBS": "0"})
    # power goes through the BMCs, not the cluster script: a busy node whose BMC is off now
    off = [f"{n} {c.node(n)['jobs']}" for n, b in bmcs.items() if b.power == "0"]
    return Outcome("#9.1 ipmi hook nesting a command hook without jobs=N", off, rc, out)


def scenario_kill_9_during_power_off(tmp: Path, off_delay_s: float = 4.0) -> Outcome:
    """#9.2: ``kill -9`` of a real ``greencpn apply`` subprocess while its hook's power_off
    runs; at once the next slot's apply (all on) runs, then jobs land on every node that is on
    and not drained; then the orphaned power_off completes."""
    import signal
    import subprocess
    import time

    c = make_cluster(tmp, nodes={"n1": 0, "n2": 0})
    off = write_plan(
        tmp / "off.json",
        c.config,
        [{"name": "p", "nodes": 2, "nodes_on": [0, 0]}],
        start=this_hour(),
    )
    on = write_plan(
        tmp / "on.json",
        c.config,
        [{"name": "p", "nodes": 2, "nodes_on": [2, 2]}],
        start=this_hour(),
    )
    argv = ["--slot", "now", "--state-dir", str(tmp / "state"), "--allow-actuation"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CLUSTER_OFF_DELAY_S": str(off_delay_s)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "greencpn.cli", "apply", str(off), *argv],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while not c.calls("power_off") and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    rc, out = _apply(c, on, *argv[:2], env={"CLUSTER_OFF_DELAY_S": "0"})
    for n in ("n1", "n2"):  # the scheduler places jobs on usable nodes
        s = c.node(n)
        if s["power"] == "on" and not s["drained"]:
            c.set(n, jobs=3)
    deadline = time.monotonic() + off_delay_s + 15
    while len(c.calls("power_off")) and time.monotonic() < deadline:
        if all(c.node(n)["power"] == "off" for n in ("n1", "n2")) or c.killed():
            break
        time.sleep(0.05)
    time.sleep(off_delay_s)  # whatever the orphan was going to do, it has done now
    return Outcome("#9.2 kill -9 of apply during a slow power_off", c.killed(), rc, out)


SCENARIOS: list[Callable[[Path], Outcome]] = [
    scenario_command_hook_without_job_counts,
    scenario_wol_nesting_a_command_hook,
    scenario_plan_names_nodes_the_config_does_not,
    scenario_duplicated_pool_in_plan,
    scenario_kill_9_during_power_off,
]
