"""Reconcile: observe the fleet and diff it against one slot of the plan, per pool.

:func:`compute_diff` runs these named steps for every pool of the plan:

1. :func:`_pool_view` — the pool's config, its slot target, hook, hostlist and spares;
2. :func:`_observe_pool` — node status through the pool's hook (``unknown`` on a hook fault);
3. :func:`_overdue_boots` — nodes past their boot deadline are to be marked failed;
4. :func:`_choose_switching` — nodes to power off / on (the safety rules of
   :mod:`greencpn.actuate.safety`) and the nodes greencpn drained that are to be resumed; or,
   for a pool greencpn cannot switch, the advisory note;
5. :func:`_diff_caps` — the GPU caps to lower and to raise on the nodes that are on and stay on:
   the GPUs of a running job the plan gives its own ``jobs[].power_cap_w`` get the job's cap
   (:func:`_job_caps`, its GPU indices through :attr:`Backends.job_gpus`), the others the
   pool's. A job is capped whole or not at all: if any of its GPUs cannot take the job's cap
   (indices not read, node not on or not read, GPU or range missing), all of them keep the
   pool's cap and the job is reported.

Nothing here changes the fleet: the phases (:mod:`greencpn.actuate.phases`) carry the diff out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from greencpn.actuate.base import GpuBackend, GpuInfo, NodePower, NodePowerHook, NodeStatus
from greencpn.actuate.execution import capture
from greencpn.actuate.hostlist import compress, expand
from greencpn.actuate.ledger import Ledger, NodeRecord
from greencpn.actuate.plan_slot import SlotRef
from greencpn.actuate.safety import (
    WORK_UNKNOWN,
    ControlSettings,
    Held,
    choose_power_off,
    choose_power_on,
    counts_as_on,
    designated_spares,
)
from greencpn.config import FleetConfig, PoolConfig
from greencpn.errors import ConfigError

log = logging.getLogger(__name__)

CAP_TOLERANCE_W = 0.5
"""Caps within this many watts of the target count as equal (NVML works in milliwatts)."""
NO_GPU_BACKEND = "no GPU backend for this node"


# --------------------------------------------------------------------------- backends


@dataclass
class Backends:
    """What ``apply`` acts through.

    Attributes:
        hooks: per pool name, its node power hook (``None``: node power is not actuated).
        gpus: node name -> that node's GPU backend, or ``None`` if it cannot be reached.
    """

    hooks: Mapping[str, NodePowerHook | None]
    gpus: Callable[[str], GpuBackend | None]
    job_gpus: Callable[[str], Mapping[str, Sequence[int]] | None] | None = None
    """Job id -> the GPU indices it runs on per node (Slurm: ``scontrol show job -d``), or
    None when it is not running; raises when they cannot be read. None: no source, so a plan's
    per-job caps are not applied (a note in the diff; the pool cap goes on every GPU)."""


# --------------------------------------------------------------------------- the diff


@dataclass(frozen=True)
class CapChange:
    node: str
    index: int
    before_w: float
    after_w: float

    @property
    def target(self) -> str:
        return f"{self.node}:gpu{self.index}"


@dataclass
class JobCap:
    """One running job's own GPU cap (plan ``jobs[].power_cap_w``) on the GPUs it runs on."""

    job_id: str
    cap_w: float
    gpus: dict[str, tuple[int, ...]]
    lower: list[CapChange] = field(default_factory=list)
    raise_: list[CapChange] = field(default_factory=list)

    @property
    def targets(self) -> list[str]:
        return [f"{n}:gpu{i}" for n, idx in sorted(self.gpus.items()) for i in idx]


@dataclass
class PoolDiff:
    """Plan target vs observed state for one pool, and the actions chosen to close the gap."""

    name: str
    site: str
    hook_kind: str
    nodes: list[str]
    spares: list[str]
    statuses: list[NodeStatus]
    plan_nodes_on: int
    target_nodes_on: int
    on_now: int
    power_off: list[str] = field(default_factory=list)
    power_on: list[str] = field(default_factory=list)
    resume: list[str] = field(default_factory=list)
    mark_failed: list[Held] = field(default_factory=list)
    held: list[Held] = field(default_factory=list)
    target_cap_w: float | None = None
    caps_now_w: dict[str, list[float]] = field(default_factory=dict)
    cap_lower: list[CapChange] = field(default_factory=list)
    cap_raise: list[CapChange] = field(default_factory=list)
    cap_unreached: list[Held] = field(default_factory=list)
    cap_out_of_range: list[Held] = field(default_factory=list)
    """GPUs (``node:gpuN``) whose device range excludes the plan's cap: not applied."""
    job_caps: list[JobCap] = field(default_factory=list)
    """Running jobs given their own cap (their GPUs are not in ``cap_lower``/``cap_raise``)."""
    job_caps_held: list[Held] = field(default_factory=list)
    """Jobs (``job:ID``) whose own cap is not applied: their GPUs keep the pool's cap."""
    notes: list[str] = field(default_factory=list)
    pool_cfg: PoolConfig | None = None
    actuated: bool = True
    work_unknown: list[str] = field(default_factory=list)
    """Nodes the plan wanted off that were kept on because their hook reports no work count."""

    @property
    def unknown(self) -> list[str]:
        """Nodes of this pool whose status could not be read (never switched)."""
        return [s.name for s in self.statuses if s.power == NodePower.UNKNOWN]

    @property
    def actions(self) -> int:
        return (
            len(self.power_off)
            + len(self.power_on)
            + len(self.resume)
            + len(self.mark_failed)
            + len(self.cap_lower)
            + len(self.cap_raise)
            + sum(len(j.lower) + len(j.raise_) for j in self.job_caps)
        )


def _status_all(hook: NodePowerHook, nodes: Sequence[str]) -> list[NodeStatus]:
    if not nodes:
        return []
    read = capture(lambda: {s.name: s for s in hook.status(nodes)})
    if read.exception is not None:  # a hook fault must not stop the others: nodes read unknown
        exc = read.exception
        log.warning("status of %s failed: %s", compress(nodes), exc)
        return [NodeStatus(n, NodePower.UNKNOWN, detail=f"status failed: {exc}") for n in nodes]
    got = read.result or {}
    return [
        got.get(n) or NodeStatus(n, NodePower.UNKNOWN, detail="not in status reply") for n in nodes
    ]


def _list_gpus(gb: GpuBackend, node: str, notes: list[str]) -> list[GpuInfo] | None:
    read = capture(gb.list_gpus)
    if read.exception is not None:
        notes.append(f"{node}: cannot read GPUs ({read.error}); caps left as they are")
        return None
    return read.result


def _cap_changes(
    target_w: float, node: str, gpus: Sequence[GpuInfo], notes: list[str]
) -> tuple[list[CapChange], list[CapChange], list[Held]]:
    """Caps to lower and to raise on one node, and the GPUs whose range excludes the target."""
    lower: list[CapChange] = []
    raise_: list[CapChange] = []
    out_of_range: list[Held] = []
    for g in gpus:
        if (
            not g.power_limit_min_w - CAP_TOLERANCE_W
            <= target_w
            <= g.power_limit_max_w + CAP_TOLERANCE_W
        ):
            notes.append(
                f"{node}:gpu{g.index}: target {target_w:g} W is outside the device range "
                f"{g.power_limit_min_w:g}–{g.power_limit_max_w:g} W; left at {g.power_limit_current_w:g} W"
            )
            out_of_range.append(
                Held(
                    f"{node}:gpu{g.index}",
                    f"target {target_w:g} W is outside the device range "
                    f"{g.power_limit_min_w:g}–{g.power_limit_max_w:g} W",
                )
            )
            continue
        if abs(g.power_limit_current_w - target_w) <= CAP_TOLERANCE_W:
            continue
        ch = CapChange(node, g.index, g.power_limit_current_w, target_w)
        (lower if target_w < g.power_limit_current_w else raise_).append(ch)
    return lower, raise_, out_of_range


def _pool_slot(pool: dict[str, Any], slot: int, source: str | None) -> dict[str, Any]:
    for s in pool.get("slots", []):
        if int(s.get("slot", -1)) == slot:
            return dict(s)
    raise ConfigError(
        f"pool {pool.get('name')!r} has no entry for slot {slot}",
        source=source,
        field=f"pools({pool.get('name')}).slots",
        fix="re-run greencpn plan",
    )


def unobservable(diffs: Sequence[PoolDiff]) -> list[str]:
    """The nodes of all pools whose status could not be read."""
    return [n for d in diffs for n in d.unknown]


def compute_diff(
    plan: dict[str, Any],
    slot: SlotRef,
    config: FleetConfig,
    backends: Backends,
    ledger: Ledger,
    settings: ControlSettings,
    now: datetime,
    source: str | None = None,
) -> list[PoolDiff]:
    """Observe the fleet and decide, per pool, what to switch and which caps to set."""
    pools_cfg = {p.name: p for p in config.pools}
    diffs = []
    known = ledger.node_records()  # one query for the fleet (nothing below writes the ledger)
    for pool in plan["pools"]:
        d, target = _pool_view(pool, pools_cfg, slot, config, backends, settings, source)
        records = {n: known.get(n) or NodeRecord(name=n) for n in d.nodes}
        records = _overdue_boots(d, records, now)
        _choose_switching(d, records, now)
        _diff_caps(d, target, records, backends, _plan_job_caps(plan, d.name))
        diffs.append(d)
    return diffs


def _pool_view(
    pool: dict[str, Any],
    pools_cfg: Mapping[str, PoolConfig],
    slot: SlotRef,
    config: FleetConfig,
    backends: Backends,
    settings: ControlSettings,
    source: str | None,
) -> tuple[PoolDiff, dict[str, Any]]:
    """One plan pool matched with its config and observed: the diff's skeleton and the slot
    target (``nodes_on``, ``power_cap_w``)."""
    name = pool["name"]
    pcfg = pools_cfg.get(name)
    if pcfg is None:
        raise ConfigError(
            f"plan pool {name!r} is not in the config {config.path}",
            source=source,
            field=f"pools({name})",
            fix="plan and apply with the same config",
        )
    target = _pool_slot(pool, slot.index, source)
    hook = backends.hooks.get(name)
    kind = pcfg.hook.kind  # the config's, as for the hostlist
    hook_kind = str(getattr(hook, "name", kind)) if hook is not None else kind
    if hook is None and pcfg.hook.advisory:
        hook_kind = f"{kind} (advisory)"
    hostlist = pcfg.hostlist  # the config is the authority (the plan's was checked equal)
    notes: list[str] = []
    nodes = expand(hostlist) if hostlist else []
    if not nodes:
        notes.append("no hostlist: node power and caps are not actuated (set pools.hostlist)")
    spares = designated_spares(name, nodes, min(pcfg.spares, len(nodes)), settings) if nodes else []
    statuses = _observe_pool(hook, kind, nodes, notes)
    plan_on = int(target.get("nodes_on", len(nodes)))
    d = PoolDiff(
        name=name,
        site=pool.get("site") or pcfg.site,
        hook_kind=hook_kind,
        nodes=nodes,
        spares=spares,
        statuses=statuses,
        plan_nodes_on=plan_on,
        target_nodes_on=plan_on,
        on_now=0,
        notes=notes,
        pool_cfg=pcfg,
        actuated=hook is not None and bool(nodes),
    )
    return d, target


def _observe_pool(
    hook: NodePowerHook | None, kind: str, nodes: list[str], notes: list[str]
) -> list[NodeStatus]:
    """Node status through the pool's hook; without a hook the nodes are assumed on."""
    if hook is None:
        if nodes:
            notes.append(f"hook '{kind}': node power is not actuated; caps only on reachable nodes")
        return [NodeStatus(n, NodePower.ON, detail="assumed on (no hook)") for n in nodes]
    return _status_all(hook, nodes)


def _overdue_boots(
    d: PoolDiff, records: dict[str, NodeRecord], now: datetime
) -> dict[str, NodeRecord]:
    """Boots that overran their timeout (found now, e.g. when the last apply did not wait) go
    to ``d.mark_failed``; returns the records with those nodes failed. Also counts the nodes
    on now and notes the failed and unknown ones."""
    for st in d.statuses:
        rec = records[st.name]
        if (
            not rec.failed
            and rec.boot_deadline is not None
            and st.power != NodePower.ON
            and now > rec.boot_deadline
        ):
            d.mark_failed.append(
                Held(
                    st.name,
                    f"not on by its boot deadline {rec.boot_deadline.isoformat()} "
                    f"(status {st.power.value})",
                )
            )
    newly_failed = {h.node for h in d.mark_failed}
    if newly_failed:
        records = {
            n: (
                NodeRecord(name=n, failed=True, failed_reason="boot timeout")
                if n in newly_failed
                else r
            )
            for n, r in records.items()
        }
    failed = sorted(n for n, r in records.items() if r.failed)
    if failed:
        d.notes.append(f"failed (left alone until cleared): {compress(failed)}")
    unknown = [s.name for s in d.statuses if s.power == NodePower.UNKNOWN]
    if unknown:
        d.notes.append(f"status unknown (not switched): {compress(unknown)}")
    d.on_now = sum(1 for s in d.statuses if counts_as_on(s) and s.name not in newly_failed)
    return records


def _choose_switching(d: PoolDiff, records: dict[str, NodeRecord], now: datetime) -> None:
    """The nodes to power off or on to reach the slot's target, and those to resume."""
    pcfg = d.pool_cfg
    assert pcfg is not None
    plan_on, nodes, spares, statuses = d.plan_nodes_on, d.nodes, d.spares, d.statuses
    if not d.actuated:
        # not switched by greencpn: show the plan's target (never hide it) and say so
        d.target_nodes_on = plan_on
        if nodes and plan_on != d.on_now:
            d.notes.append(
                f"advisory: the plan wants {plan_on} of {len(nodes)} on; hook '{pcfg.hook.kind}' "
                "cannot switch nodes, greencpn changes nothing here (an operator may)"
                + (
                    ""
                    if pcfg.hook.advisory
                    else " — re-plan: this pool is planned always on by this greencpn"
                )
            )
        return
    eff = min(max(plan_on, len(spares)), len(nodes))
    if eff != plan_on:
        d.notes.append(
            f"target raised from {plan_on} to {eff} nodes on to keep {len(spares)} spare(s)"
        )
    d.target_nodes_on = eff
    gap = eff - d.on_now
    held: list[Held]
    if gap < 0:
        d.power_off, held = choose_power_off(
            statuses, -gap, records, now, min_up_h=pcfg.min_up_h, spares=spares
        )
    elif gap > 0:
        d.power_on, held = choose_power_on(
            statuses, gap, records, now, min_down_h=pcfg.min_down_h, spares=spares
        )
    else:
        held = []
    d.held = held
    d.work_unknown = [h.node for h in held if h.reason == WORK_UNKNOWN]
    short = abs(gap) - len(d.power_off) - len(d.power_on)
    if short > 0:
        d.notes.append(
            f"{short} node(s) of the {'power-off' if gap < 0 else 'power-on'} target "
            "cannot be switched now (see held)"
        )
    off = set(d.power_off)
    # greencpn drained these (not every hook reports the drain flag, so the ledger decides)
    d.resume = [
        s.name
        for s in statuses
        if s.power == NodePower.ON
        and records[s.name].drained_by_us
        and not records[s.name].failed
        and s.name not in off
    ]


def _plan_job_caps(plan: Mapping[str, Any], pool: str) -> list[tuple[str, float]]:
    """``(job id, cap W)`` of the plan's jobs in ``pool`` with their own ``power_cap_w``."""
    return [
        (str(j["id"]), float(j["power_cap_w"]))
        for j in plan.get("jobs") or []
        if j.get("pool") == pool and j.get("power_cap_w") is not None and j.get("id") is not None
    ]


def _diff_caps(
    d: PoolDiff,
    target: dict[str, Any],
    records: dict[str, NodeRecord],
    backends: Backends,
    job_caps: Sequence[tuple[str, float]] = (),
) -> None:
    """GPU caps to lower and to raise on the nodes that are on and stay on (jobs' own caps on
    their GPUs, the pool's on the others)."""
    cap = target.get("power_cap_w")
    d.target_cap_w = None if cap is None else float(cap)
    if d.target_cap_w is None and not job_caps:
        return
    pool_capped = d.target_cap_w is not None
    off = set(d.power_off)
    unreachable = []
    node_gpus: dict[str, list[GpuInfo]] = {}
    for st in d.statuses:
        if st.power == NodePower.UNKNOWN and d.actuated and not records[st.name].failed:
            # the plan caps this node but it cannot be observed: a step not done
            if pool_capped:
                d.cap_unreached.append(Held(st.name, st.detail or "status unknown"))
            continue
        if st.power != NodePower.ON or st.name in off or records[st.name].failed:
            continue
        gb = backends.gpus(st.name)
        if gb is None:
            unreachable.append(st.name)
            continue
        notes: list[str] = []
        gpus = _list_gpus(gb, st.name, notes)
        if gpus is None:
            if pool_capped:
                d.notes += notes
                d.cap_unreached.append(Held(st.name, notes[-1].removeprefix(f"{st.name}: ")))
            continue
        d.caps_now_w[st.name] = [g.power_limit_current_w for g in gpus]
        node_gpus[st.name] = gpus
    owned = _job_caps(d, job_caps, node_gpus, backends)
    if d.target_cap_w is not None:
        for node, gpus in node_gpus.items():
            free = [g for g in gpus if (node, g.index) not in owned]
            lower, raise_, oor = _cap_changes(d.target_cap_w, node, free, d.notes)
            d.cap_lower += lower
            d.cap_raise += raise_
            d.cap_out_of_range += oor
    if unreachable and pool_capped:
        d.notes.append(f"no GPU backend for {compress(unreachable)}: caps not read or set")
        d.cap_unreached += [Held(n, NO_GPU_BACKEND) for n in unreachable]


def _job_caps(
    d: PoolDiff,
    job_caps: Sequence[tuple[str, float]],
    node_gpus: Mapping[str, list[GpuInfo]],
    backends: Backends,
) -> set[tuple[str, int]]:
    """Each running job's own cap on its GPUs, whole or not at all; returns the GPUs taken."""
    owned: dict[tuple[str, int], str] = {}
    pool_cap = "the pool's cap" if d.target_cap_w is not None else "their caps as they are"
    locate = backends.job_gpus
    if locate is None:
        if job_caps:  # not configured (no failure): said in the diff, not a step not done
            msg = (
                f"{len(job_caps)} job(s) with their own cap in the plan: not applied, no source "
                "of jobs' GPU indices (add a slurm cluster to [job_actuation]); their GPUs get "
                + pool_cap
            )
            log.info("%s: %s", d.name, msg)
            d.notes.append(msg)
        return set()
    for job_id, cap_w in job_caps:

        def held(reason: str, job_id: str = job_id) -> None:
            msg = f"{reason}; its GPUs keep {pool_cap}"
            log.warning("job %s: %s", job_id, msg)
            d.job_caps_held.append(Held(f"job:{job_id}", msg))

        read = capture(partial(locate, job_id))
        if read.exception is not None:
            held(f"GPU indices not read ({read.error})")
            continue
        if read.result is None:  # not running: nothing to cap
            continue
        gpus = {n: tuple(sorted(set(idx))) for n, idx in read.result.items() if idx}
        problem = _job_gpu_problem(d, job_id, cap_w, gpus, node_gpus, owned)
        if problem:
            held(problem)
            continue
        jc = JobCap(job_id, cap_w, gpus)
        for node, indices in gpus.items():
            by_index = {g.index: g for g in node_gpus[node]}
            for i in indices:
                owned[(node, i)] = job_id
                now_w = by_index[i].power_limit_current_w
                if abs(now_w - cap_w) <= CAP_TOLERANCE_W:
                    continue
                (jc.lower if cap_w < now_w else jc.raise_).append(CapChange(node, i, now_w, cap_w))
        d.job_caps.append(jc)
    return set(owned)


def _job_gpu_problem(
    d: PoolDiff,
    job_id: str,
    cap_w: float,
    gpus: Mapping[str, tuple[int, ...]],
    node_gpus: Mapping[str, list[GpuInfo]],
    owned: Mapping[tuple[str, int], str],
) -> str:
    """Why the job's cap cannot be set on all its GPUs (``""``: it can)."""
    if not gpus:
        return "running, but no GPU indices reported"
    for node, indices in sorted(gpus.items()):
        if node not in d.nodes:
            return f"runs on {node}, which is not in pool {d.name}"
        if node not in node_gpus:
            return f"{node} is not on, or its GPUs were not read"
        by_index = {g.index: g for g in node_gpus[node]}
        for i in indices:
            g = by_index.get(i)
            if g is None:
                return f"{node} has no GPU {i} (it has {sorted(by_index)})"
            if (
                not g.power_limit_min_w - CAP_TOLERANCE_W
                <= cap_w
                <= g.power_limit_max_w + CAP_TOLERANCE_W
            ):
                return (
                    f"cap {cap_w:g} W is outside {node}:gpu{i}'s range "
                    f"{g.power_limit_min_w:g}–{g.power_limit_max_w:g} W"
                )
            other = owned.get((node, i))
            if other is not None:
                return f"{node}:gpu{i} is also claimed by job {other}"
    return ""
