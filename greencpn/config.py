"""Fleet configuration: TOML files validated with pydantic.

Every validation problem becomes a :class:`~greencpn.errors.ConfigError` that names the file,
the field (dotted path, e.g. ``pools[2].gpu_model``) and how to fix it.

File layout (all paths relative to the config file)::

    [horizon]            start (UTC), slots, slot_minutes
    [objective]          carbon / cost / lateness weights
    [solver]             time_limit_s, mip_rel_gap, threads
    [carbon]             file = "carbon.csv"  (wide or long CSV, UTC)
    [[gpu_models]]       optional inline GPU profiles (else models/gpus/*.toml)
    [[sites]]            name, zone, jurisdictions, pue, power_budget_kw, price_per_kwh, latency_ms
    [[pools]]            name, site, nodes, gpu_model, gpus_per_node, node power, timing, hook
    jobs_file = "jobs.csv"  and/or  [[jobs]]

See README.md ("Config format") for every field with its unit and default.
"""

from __future__ import annotations

import csv
import math
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from greencpn.errors import ConfigError

PACKAGE_ROOT = Path(__file__).resolve().parent
# GPU/node profiles: the repository's top-level models/ (source checkout, editable install),
# else the copy a wheel ships as package data (setup.py copies models/ to greencpn/_models/).
SOURCE_MODELS_ROOT = PACKAGE_ROOT.parent / "models"
PACKAGED_MODELS_ROOT = PACKAGE_ROOT / "_models"


def default_models_dir(kind: str = "gpus") -> Path:
    """Where the bundled ``kind`` profiles (``gpus`` or ``nodes``) are.

    The source tree's ``models/<kind>`` when greencpn runs from a checkout, else the packaged
    ``greencpn/_models/<kind>`` of a wheel install. ``models_dir`` in the config overrides it.
    """
    for root in (SOURCE_MODELS_ROOT, PACKAGED_MODELS_ROOT):
        cand = root / kind
        if cand.is_dir() and any(cand.glob("*.toml")):
            return cand
    return PACKAGED_MODELS_ROOT / kind


DEFAULT_MODELS_DIR = default_models_dir("gpus")

PositiveFloat = Annotated[float, Field(gt=0)]
NonNegFloat = Annotated[float, Field(ge=0)]


class _Strict(BaseModel):
    # allow_inf_nan=False: TOML's inf/nan (and "inf" in a jobs CSV) are refused in every float
    # field — they used to give NaN plans, Infinity tokens in plan.json and OverflowErrors
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _parse_utc(value: Any, what: str = "timestamp") -> datetime:
    """Parse an ISO-8601 timestamp that carries its zone; convert it to UTC.

    Naive timestamps are refused: their zone is unknown and guessing shifts the plan.
    """
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError as exc:
            raise ValueError(
                f"{what} {value!r} is not an ISO-8601 timestamp (use e.g. 2026-03-02T00:00:00Z)"
            ) from exc
    else:
        raise ValueError(f"{what} must be an ISO-8601 timestamp string, got {value!r}")
    if dt.tzinfo is None or dt.utcoffset() is None:
        raise ValueError(
            f"{what} {value!s} has no timezone; write it in UTC with a 'Z' suffix "
            "(e.g. 2026-03-02T00:00:00Z) or with an explicit offset such as +01:00"
        )
    from datetime import UTC

    return dt.astimezone(UTC)


class GpuLevel(_Strict):
    """One discrete power-cap level of a GPU model."""

    cap_w: PositiveFloat = Field(description="power limit set through NVML, W")
    throughput: float = Field(gt=0, le=1.0, description="work rate relative to the highest level")
    power_factor: float = Field(
        gt=0,
        le=1.0,
        description="average board power of a busy GPU at this cap / power_limit_max_w",
    )


_PROFILE_FIX = (
    "give [[levels]] a throughput and power_factor that do not fall as cap_w rises, "
    "throughput <= 1 and power_factor <= cap_w / power_limit_max_w (a busy GPU cannot draw more "
    "than its cap); bundled profiles: rerun `greencpn models fit` / models/fit_gpu_profiles.py"
)


def _check_levels(levels: list[GpuLevel], gm: GpuModelConfig, where: str) -> None:
    """Physical sanity of one level list (raised as a 'gpu_profile' error with its fix)."""
    for i, lv in enumerate(levels):
        if not gm.power_limit_min_w <= lv.cap_w <= gm.power_limit_max_w:
            raise ValueError(
                f"{where}[{i}].cap_w={lv.cap_w} W is outside the device range "
                f"{gm.power_limit_min_w}–{gm.power_limit_max_w} W"
            )
        if lv.power_factor * gm.power_limit_max_w < gm.idle_w:
            raise ValueError(f"{where}[{i}]: busy power is below idle_w")
        # 0.5 % slack: published factors are rounded to 3 decimals
        if lv.power_factor > lv.cap_w / gm.power_limit_max_w * 1.005:
            raise PydanticCustomError(
                "gpu_profile",
                "{where}[{i}].power_factor={pf} exceeds cap_w / power_limit_max_w = {lim} "
                "(a GPU capped at {cap} W cannot draw {w} W)",
                {
                    "where": where,
                    "i": i,
                    "pf": lv.power_factor,
                    "lim": f"{lv.cap_w / gm.power_limit_max_w:.3f}",
                    "cap": lv.cap_w,
                    "w": f"{lv.power_factor * gm.power_limit_max_w:.0f}",
                },
            )
    caps = [lv.cap_w for lv in levels]
    if len(set(caps)) != len(caps):
        raise ValueError(f"{where} must have distinct cap_w values")
    order = sorted(range(len(levels)), key=lambda i: levels[i].cap_w)
    for name in ("throughput", "power_factor"):
        for lo, hi in zip(order, order[1:], strict=False):
            a, b = getattr(levels[lo], name), getattr(levels[hi], name)
            if b < a:
                raise PydanticCustomError(
                    "gpu_profile",
                    "{where}[{hi}].{name}={b} at {cap} W is below {a} at the lower cap "
                    "{pcap} W ({where}[{lo}]): levels must not lose {name} as the cap rises",
                    {
                        "where": where,
                        "hi": hi,
                        "lo": lo,
                        "name": name,
                        "b": b,
                        "a": a,
                        "cap": levels[hi].cap_w,
                        "pcap": levels[lo].cap_w,
                    },
                )


class WorkloadClassProfile(_Strict):
    """The levels of one workload class (same caps as the profile's own levels)."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_-]+$")
    description: str = ""
    uncapped_power_share_min: float = Field(default=0.0, ge=0, le=1)
    uncapped_power_share_max: float = Field(default=1.0, gt=0, le=1)
    configs: int = Field(default=0, ge=0, description="configurations the fit used (0: none)")
    extrapolated: bool = False
    levels: list[GpuLevel] = Field(min_length=1)


class GpuModelConfig(_Strict):
    """Power/performance profile of a GPU model (see models/gpus/*.toml)."""

    name: str
    aliases: list[str] = Field(default_factory=list, description="NVML names that map to it")
    power_limit_min_w: PositiveFloat
    power_limit_max_w: PositiveFloat
    power_limit_default_w: PositiveFloat
    idle_w: NonNegFloat = Field(description="board power of an idle GPU, W")
    levels: list[GpuLevel] = Field(min_length=1)
    extrapolated: bool = False
    source: str = Field(min_length=1, description="where the numbers come from")
    notes: str = ""
    workload_classes: list[WorkloadClassProfile] = Field(
        default_factory=list,
        description="per-class levels (jobs name theirs with workload_class); "
        "jobs without a class, or with one this model lacks, use `levels`",
    )

    @model_validator(mode="after")
    def _check(self) -> GpuModelConfig:
        if not self.power_limit_min_w <= self.power_limit_default_w <= self.power_limit_max_w:
            raise ValueError(
                "need power_limit_min_w <= power_limit_default_w <= power_limit_max_w "
                f"(got {self.power_limit_min_w}, {self.power_limit_default_w}, {self.power_limit_max_w})"
            )
        _check_levels(self.levels, self, "levels")
        caps = [lv.cap_w for lv in self.levels]
        seen: set[str] = set()
        for j, wc in enumerate(self.workload_classes):
            if wc.name in seen:
                raise ValueError(f"workload_classes[{j}]: duplicate class name {wc.name!r}")
            seen.add(wc.name)
            _check_levels(wc.levels, self, f"workload_classes[{j}]({wc.name}).levels")
            if sorted(lv.cap_w for lv in wc.levels) != sorted(caps):
                raise PydanticCustomError(
                    "gpu_profile",
                    "workload_classes[{j}]({name}).levels have caps {got}, not the profile's "
                    "levels {caps} (a pool's cap applies to every class)",
                    {"j": j, "name": wc.name, "got": [lv.cap_w for lv in wc.levels], "caps": caps},
                )
        return self

    def levels_for(self, workload_class: str | None) -> list[GpuLevel]:
        """The levels of a job's class (the profile's own levels when it has no such class)."""
        if workload_class:
            for wc in self.workload_classes:
                if wc.name == workload_class:
                    return wc.levels
        return self.levels

    def levels_for_mix(self, work_by_class: dict[str | None, float]) -> list[GpuLevel]:
        """The levels of a GPU running a mix of classes (work in full-power GPU-h per class).

        At each cap the mix needs Σ_k w_k / θ_k GPU-hours and draws Σ_k (w_k / θ_k) × π_k:
        θ = Σ w / Σ (w / θ_k) and power_factor = that energy ÷ those GPU-hours. One class (or
        none) gives its own levels unchanged."""
        mix = {k: w for k, w in work_by_class.items() if w > 0}
        curves = {k: self.levels_for(k) for k in mix}
        distinct = {id(c) for c in curves.values()}
        if len(distinct) <= 1:
            return next(iter(curves.values()), self.levels)
        out: list[GpuLevel] = []
        for lv in self.levels:
            gpu_h = energy = 0.0
            for k, w in mix.items():
                ck = {x.cap_w: x for x in curves[k]}[lv.cap_w]
                gpu_h += w / ck.throughput
                energy += w / ck.throughput * ck.power_factor
            out.append(
                GpuLevel(
                    cap_w=lv.cap_w,
                    throughput=min(1.0, sum(mix.values()) / gpu_h),
                    power_factor=min(1.0, energy / gpu_h),
                )
            )
        return out

    @property
    def class_names(self) -> list[str]:
        return [wc.name for wc in self.workload_classes]


class HookConfig(BaseModel):
    """How a pool's nodes are powered (used by ``greencpn apply``); extra keys are per kind."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)
    kind: Literal["none", "command", "slurm", "kubernetes", "ipmi", "wol", "agent"] = "none"
    advisory: bool = Field(
        default=False,
        description="kind 'none' only: plan the pool's nodes freely although greencpn cannot "
        "switch them (the plan is advice for an operator); default: planned always on",
    )


class SiteConfig(_Strict):
    name: str = Field(min_length=1)
    zone: str = Field(min_length=1, description="grid zone of the carbon series, e.g. DE")
    jurisdictions: list[str] = Field(default_factory=list, description="e.g. ['EU', 'DE']")
    pue: float = Field(ge=1.0, le=3.0, description="power usage effectiveness")
    power_budget_kw: PositiveFloat | list[PositiveFloat] | None = Field(
        default=None, description="meter budget (IT × PUE), kW, constant or one value per slot"
    )
    price_per_kwh: NonNegFloat | list[NonNegFloat] = Field(
        default=0.0, description="electricity price per kWh at the meter, constant or per slot"
    )
    latency_ms: dict[str, NonNegFloat] = Field(
        default_factory=dict, description="network latency to named user regions, ms"
    )
    carbon_source: str | None = Field(
        default=None,
        description="forecast source for this site: electricitymaps | watttime | ukgrid | "
        "csv:PATH (live sources fall back to cache, then a forecaster); default: [carbon] file",
    )


class PoolConfig(_Strict):
    name: str = Field(min_length=1)
    site: str
    nodes: int = Field(ge=1)
    gpu_model: str
    gpus_per_node: int = Field(ge=1)
    node_idle_w: PositiveFloat = Field(description="a powered-on node with idle GPUs, W")
    node_off_w: NonNegFloat = Field(default=0.0, description="a powered-off node (BMC), W")
    node_boot_w: NonNegFloat = Field(
        default=0.0,
        description=(
            "average power while booting, W. Boot energy model: a node started in a slot is "
            "counted on (idle) for the whole slot and draws this instead of node_idle_w during "
            "boot_time_min, so one start-up adds (node_boot_w − node_idle_w) × boot time "
            "(counted as 0 when node_boot_w < node_idle_w); its GPUs hold no work until booted"
        ),
    )
    boot_time_min: NonNegFloat = Field(default=0.0, description="time to boot, minutes")
    min_up_h: NonNegFloat = Field(default=0.0, description="a started node stays on this long")
    min_down_h: NonNegFloat = Field(default=0.0, description="a stopped node stays off this long")
    spares: int = Field(default=0, ge=0, description="nodes that always stay on")
    initial_on: int | None = Field(default=None, ge=0, description="nodes on now (default: all)")
    hostlist: str | None = Field(
        default=None, description="the pool's node names as a Slurm hostlist, e.g. 'gpu[001-040]'"
    )
    load_history: str | None = Field(
        default=None,
        description="CSV (time + busy GPUs) of this pool's interactive / not-yet-queued load; its "
        "forecast quantile is kept powered on as a reserve",
    )
    load_quantile: float = Field(default=0.9, gt=0, lt=1, description="reserve quantile")
    hook: HookConfig = Field(default_factory=HookConfig)

    @property
    def planned_always_on(self) -> bool:
        """A pool greencpn cannot switch (``hook = { kind = "none" }`` written in the config,
        not ``advisory``): the planner keeps every node on, so no saving is credited for nodes
        apply could never power off. A pool with no hook table at all is planning-only
        (what-if) and planned freely."""
        return (
            self.hook.kind == "none" and "hook" in self.model_fields_set and not self.hook.advisory
        )

    @model_validator(mode="after")
    def _check(self) -> PoolConfig:
        if self.spares > self.nodes:
            raise ValueError(f"spares={self.spares} is more than nodes={self.nodes}")
        if self.initial_on is not None and self.initial_on > self.nodes:
            raise ValueError(f"initial_on={self.initial_on} is more than nodes={self.nodes}")
        return self


class JobConfig(_Strict):
    id: str = Field(min_length=1)
    gpus: int = Field(ge=1)
    work_gpu_h: PositiveFloat = Field(description="work in GPU-hours at full power")
    release: datetime
    deadline: datetime
    jurisdictions: list[str] = Field(
        default_factory=list, description="where its data may go; empty = anywhere"
    )
    user_region: str | None = None
    max_latency_ms: NonNegFloat | None = None
    checkpointable: bool = False
    priority: float = Field(default=1.0, gt=0, description="multiplies the lateness weight")
    submit_site: str | None = Field(
        default=None,
        min_length=1,
        description="site the job was submitted at: the carbon-agnostic baseline runs it "
        "there (default: the allowed site with the most GPUs, ties by name — "
        "baseline_submit_site)",
    )
    workload_class: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="GPU workload class (e.g. light, heavy: see models/README.md); its "
        "profile curve sets the job's speed and power at each cap; none = the model's median",
    )

    @field_validator("release", "deadline", mode="before")
    @classmethod
    def _utc(cls, v: Any) -> datetime:
        return _parse_utc(v)

    @model_validator(mode="after")
    def _check(self) -> JobConfig:
        if self.deadline <= self.release:
            raise ValueError(
                f"deadline {self.deadline.isoformat()} is not after release {self.release.isoformat()}"
            )
        if (self.max_latency_ms is None) != (self.user_region is None):
            raise ValueError("give user_region and max_latency_ms together (or neither)")
        return self


class HorizonConfig(_Strict):
    start: datetime | None = Field(default=None, description="first slot start, UTC")
    slots: int = Field(default=48, ge=1, le=24 * 366)
    slot_minutes: int = Field(default=60, ge=5, le=24 * 60)

    @field_validator("start", mode="before")
    @classmethod
    def _utc(cls, v: Any) -> datetime | None:
        return None if v is None else _parse_utc(v, "horizon.start")

    @model_validator(mode="after")
    def _check(self) -> HorizonConfig:
        if (24 * 60) % self.slot_minutes != 0:
            raise ValueError("slot_minutes must divide a day (e.g. 15, 30, 60, 120)")
        if self.start is not None:
            step = self.slot_minutes * 60
            off = int(self.start.timestamp()) % step + self.start.microsecond / 1e6
            if off:
                before = self.start - timedelta(seconds=off)
                after = before + timedelta(seconds=step)
                raise ValueError(
                    f"horizon.start {self.start:%Y-%m-%dT%H:%M:%SZ} is not on the "
                    f"{self.slot_minutes}-min slot grid (slots start at multiples of "
                    f"{self.slot_minutes} min from midnight UTC, as carbon data does); use "
                    f"{before:%Y-%m-%dT%H:%M:%SZ} or {after:%Y-%m-%dT%H:%M:%SZ}"
                )
        return self


class ObjectiveConfig(_Strict):
    carbon_weight_per_kg: NonNegFloat = Field(
        default=1.0, description="objective units per kg CO2e"
    )
    cost_weight: NonNegFloat = Field(default=0.0, description="objective units per unit of price")
    lateness_weight_per_gpu_h: NonNegFloat = Field(
        default=10.0, description="per GPU-hour of work finished one hour after its deadline"
    )
    unserved_weight_per_gpu_h: NonNegFloat = Field(
        default=1000.0, description="per GPU-hour of work that cannot run inside the horizon"
    )
    ignore_gains_within_forecast_error: bool = Field(
        default=False,
        description="decide on forecasts whose hour-to-hour differences are shrunk by their own "
        "error (sites with a carbon_source whose forecast carries quantiles); plans are still priced "
        "at the point forecast",
    )
    tradeoff_points: int = Field(
        default=0,
        ge=0,
        le=10,
        description="extra trade-off points (cost weight × 4^±i) beyond carbon-only and cost-only, "
        "which are reported whenever both weights are non-zero",
    )


class SolverConfig(_Strict):
    time_limit_s: PositiveFloat = 60.0
    joblevel_time_limit_s: NonNegFloat = Field(
        default=45.0,
        description="time for the job-level MILP candidate on fleets small enough for it "
        "(<= 20,000 start binaries), s; 0 = never build it. The control step builds it only "
        "with [controller] joblevel_candidate = true and when it re-places (not when it keeps "
        "the newest plan's placement)",
    )
    mip_rel_gap: float = Field(default=0.01, ge=0, lt=1)
    threads: int = Field(default=0, ge=0, description="0 = HiGHS default")
    window_rounding_slots: int = Field(
        default=1,
        ge=1,
        description="widen job windows to multiples of this many slots when grouping (fewer groups; "
        "the MILP is relaxed, its bound stays valid, placement keeps the real windows)",
    )
    max_late_slots: int = Field(
        default=6,
        ge=0,
        description="how many slots past its deadline the MILP may place a group's work (later work "
        "counts as unserved, and the placement still runs it as late as needed)",
    )
    exact_cap_levels: bool = Field(
        default=False,
        description="one cap level per pool and slot inside the MILP (binaries); default: GPU counts "
        "per level in the MILP, one level per pool and slot in the executed plan",
    )
    cap_mode: Literal["pool", "job"] = Field(
        default="pool",
        description="GPU power caps: pool — one cap level per pool and slot; job — after the "
        "plan is chosen, each placed job gets its own level on its class's curve (the least "
        "carbon whose slower run still ends by its deadline on GPUs already on, inside the site "
        "budget), kept only when the evaluated objective is not higher (plan.json "
        "jobs[].power_cap_w)",
    )


class CarbonConfig(_Strict):
    file: str = Field(description="CSV with UTC timestamps: wide (one column per zone) or long")
    assume_utc: bool = Field(default=False, description="treat timestamps without an offset as UTC")
    max_gap_slots: int = Field(
        default=0,
        ge=0,
        description="fill gaps up to this many slots by interpolation; longer gaps are refused",
    )
    accounting: Literal["lifecycle", "direct"] | None = Field(
        default=None,
        description="emission factors of the file's values: lifecycle or direct (combustion); "
        "stated in the plan's carbon_signal (default: not stated)",
    )
    actuals_file: str | None = Field(
        default=None,
        min_length=1,
        description="CSV of measured intensities (same formats as file): a plan decided on "
        "forecasts is also priced on these (plan.json on_actuals)",
    )


# ----------------------------------------------------------------------------- job actuation


class JobPoolTarget(_Strict):
    """How a plan pool is named to the scheduler (only the cluster's ``steer`` field is used)."""

    partition: str | None = Field(default=None, min_length=1, description="Slurm partition")
    features: str | None = Field(
        default=None, min_length=1, description="Slurm --constraint, e.g. 'a100&green'"
    )
    nodes: str | None = Field(default=None, min_length=1, description="Slurm hostlist")
    node_selector: dict[str, str] = Field(
        default_factory=dict, description="Kubernetes node labels the pod must match"
    )


class JobClusterConfig(_Strict):
    """One scheduler greencpn acts on (``[[job_actuation.clusters]]``)."""

    name: str = Field(min_length=1, description="cluster name (Slurm ClusterName)")
    kind: Literal["slurm", "kubernetes", "command", "fake"]
    sites: list[str] = Field(min_length=1, description="plan sites whose jobs this cluster runs")
    steer: Literal["none", "partition", "features", "nodes"] = Field(
        default="none", description="how a job is sent to its planned pool"
    )
    pools: dict[str, JobPoolTarget] = Field(
        default_factory=dict, description="plan pool name -> scheduler names"
    )
    timeout_s: PositiveFloat = Field(default=30.0, description="per scheduler call, s")
    # slurm
    slurm_conf: str | None = Field(default=None, description="this cluster's slurm.conf")
    # kubernetes
    host: str | None = Field(default=None, description="API server URL")
    token_file: str | None = None
    ca_file: str | None = None
    insecure_skip_tls_verify: bool = False
    namespace: str | None = Field(default=None, description="only this namespace (default all)")
    gate: str = Field(default="greencpn.io/planned-start", description="scheduling gate name")
    lease_namespace: str = Field(
        default="default", min_length=1, description="namespace of greencpn's heartbeat Lease"
    )
    heartbeat_s: PositiveFloat = Field(
        default=7200.0,
        description="heartbeat lease duration, s (the webhook stops gating when it runs out): "
        "about twice the step period",
    )
    # command
    command: list[str] | None = Field(default=None, min_length=1, description="argv")

    @model_validator(mode="after")
    def _check(self) -> JobClusterConfig:
        if self.kind == "command" and not self.command:
            raise ValueError('kind "command" needs command = ["/path/to/script"]')
        if self.kind == "kubernetes" and not self.host:
            raise ValueError('kind "kubernetes" needs host = "https://API:6443"')
        if self.kind != "kubernetes" and self.host is not None:
            raise ValueError(f'host is for kind "kubernetes", not {self.kind!r}')
        if self.kind != "slurm" and self.slurm_conf is not None:
            raise ValueError(f'slurm_conf is for kind "slurm", not {self.kind!r}')
        if self.kind != "command" and self.command is not None:
            raise ValueError(f'command is for kind "command", not {self.kind!r}')
        if self.kind == "kubernetes" and self.steer not in ("none", "nodes"):
            raise ValueError('kubernetes steers with node affinity: write steer = "nodes"')
        if self.steer != "none":
            for pool, t in self.pools.items():
                if self.kind == "kubernetes":
                    if not t.node_selector:
                        raise ValueError(f"pools.{pool} needs node_selector = {{label = value}}")
                elif getattr(t, self.steer) is None:
                    raise ValueError(f'steer = "{self.steer}" but pools.{pool} has no {self.steer}')
        return self


class JobActuationConfig(_Strict):
    """``[job_actuation]``: make pending jobs start where and when the plan says.

    Deadlines: the scheduler's own (Slurm ``--deadline``) when set, else release + time limit +
    slack (by QOS, else by partition, else ``default_slack_h``). The latest safe start is the
    deadline minus the time limit (the job at full power); greencpn never defers past it.
    """

    defer_with: Literal["begin_time", "hold"] = Field(
        default="begin_time",
        description="begin_time: the scheduler starts the job on its own even if greencpn dies; "
        "hold: greencpn releases it (at the latest safe start at the latest)",
    )
    excluded_users: list[str] = Field(default_factory=list)
    excluded_accounts: list[str] = Field(default_factory=list)
    excluded_partitions: list[str] = Field(default_factory=list)
    excluded_qos: list[str] = Field(default_factory=list)
    default_slack_h: NonNegFloat = Field(
        default=24.0, description="deadline slack for jobs without their own deadline, h"
    )
    slack_h_per_partition: dict[str, NonNegFloat] = Field(default_factory=dict)
    slack_h_per_qos: dict[str, NonNegFloat] = Field(default_factory=dict)
    min_defer_s: NonNegFloat = Field(
        default=60.0, description="a begin time less than this ahead is not worth a change, s"
    )
    clusters: list[JobClusterConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> JobActuationConfig:
        names = [c.name for c in self.clusters]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate cluster name(s) {dup}")
        sites = [s for c in self.clusters for s in c.sites]
        dup = sorted({s for s in sites if sites.count(s) > 1})
        if dup:
            raise ValueError(f"site(s) {dup} are in more than one cluster")
        return self


class ControllerConfig(_Strict):
    """``[controller]``: how the control step re-plans and acts (every field optional)."""

    preempt_checkpointable: bool = Field(
        default=False,
        description="a running checkpointable job may be moved by a re-plan (else it keeps its pool)",
    )
    node_flap_weight: NonNegFloat = Field(
        default=0.5,
        description="objective units per node switched against the previous plan (stability)",
    )
    job_move_weight_per_gpu_h: NonNegFloat = Field(
        default=0.05,
        description="objective units per GPU-h placed at another site than the previous plan",
    )
    job_shift_weight_per_gpu_h_slot: NonNegFloat = Field(
        default=0.005,
        description="objective units per GPU-h and slot of distance from the previous planned start",
    )
    retries: int = Field(default=3, ge=0, description="retries of an actuator TemporaryError")
    retry_backoff_s: NonNegFloat = Field(default=2.0, description="first retry delay, doubles")
    degraded_cooldown_s: NonNegFloat = Field(
        default=3600.0, description="a pool with a permanent actuator error is left alone this long"
    )
    keep_plans: int = Field(default=336, ge=0, description="plan documents kept in the ledger")
    candidates: bool = Field(
        default=True,
        description="the step also tries the per-job cap-level placement and the carbon-aware "
        "greedy schedule, each scored with its stability cost (false: the MILP-guided and the "
        "kept placement only)",
    )
    incremental_min_jobs: int = Field(
        default=1000,
        ge=0,
        description="re-plans with at least this many jobs place only the changed jobs when the "
        "newest plan can be kept for 75 % of them (no full re-placement, no other candidates)",
    )
    joblevel_candidate: bool = Field(
        default=True,
        description="the step also tries the job-level MILP where it is small enough "
        "(solver.joblevel_time_limit_s)",
    )
    baselines: Literal["none", "agnostic", "all"] = Field(
        default="agnostic",
        description="the report baselines each step prices: none; agnostic (the carbon-agnostic "
        "one only, enough for the daemon's kg/kWh saved so far); all (also shutdown-idle and "
        "the carbon-aware greedy, as in `greencpn plan`). The greedy schedule is still built "
        "when it competes as a candidate",
    )
    baselines_every: int = Field(
        default=1,
        ge=1,
        strict=True,  # a whole number of steps: "3" or 3.0 in the file is a mistake
        description="price the baselines every this many steps (1: every step). In between, "
        "the saving figures (ledger, Prometheus, greencpn status) use the newest priced "
        "carbon-agnostic baseline's figure for the same slot, labelled with the step and time "
        "it was priced at; it is priced afresh once it is this many steps old, no longer covers "
        "the slot, or the fleet changed",
    )
    candidates_max_jobs: int = Field(
        default=1000,
        ge=0,
        description="above this many jobs the step skips the per-job cap-level and greedy "
        "candidates (their placements cost seconds each on big fleets); 0: no limit",
    )


class FleetFile(_Strict):
    """The whole TOML file."""

    name: str = "fleet"
    currency: str | None = Field(
        default=None,
        min_length=1,
        max_length=8,
        description="currency of every price_per_kwh and cost figure, e.g. EUR (default: not stated)",
    )
    horizon: HorizonConfig = Field(default_factory=HorizonConfig)
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    solver: SolverConfig = Field(default_factory=SolverConfig)
    controller: ControllerConfig = Field(default_factory=ControllerConfig)
    carbon: CarbonConfig | None = None
    models_dir: str | None = None
    gpu_models: list[GpuModelConfig] = Field(default_factory=list)
    sites: list[SiteConfig] = Field(min_length=1)
    pools: list[PoolConfig] = Field(min_length=1)
    jobs_file: str | None = Field(
        default=None,
        description="jobs as CSV, JSON, or saved `squeue --json` output (pending jobs)",
    )
    jobs: list[JobConfig] = Field(default_factory=list)
    job_actuation: JobActuationConfig | None = Field(
        default=None, description="job actuation (greencpn apply; docs/jobs.md)"
    )

    @field_validator("jobs_file")
    @classmethod
    def _jobs_file(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError(
                "jobs_file is empty (it would plan no jobs); name a CSV or JSON file, or remove "
                "the key when the jobs are all in [[jobs]]"
            )
        return v

    @field_validator("models_dir")
    @classmethod
    def _models_dir(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("models_dir is empty; remove it to use the bundled GPU profiles")
        return v


@dataclass(frozen=True)
class FleetConfig:
    """A validated config with its files resolved (paths absolute, GPU models loaded)."""

    path: Path
    raw: FleetFile
    gpu_models: dict[str, GpuModelConfig]
    jobs: list[JobConfig]
    carbon_path: Path

    @property
    def sites(self) -> list[SiteConfig]:
        return self.raw.sites

    @property
    def pools(self) -> list[PoolConfig]:
        return self.raw.pools


# ----------------------------------------------------------------------------- error formatting

_FIX_HINTS = {
    "missing": "add this field",
    "extra_forbidden": "remove it or check its spelling against README.md 'Config format'",
    "greater_than": "use a positive value",
    "greater_than_equal": "use a value at or above the minimum",
    "less_than_equal": "use a smaller value",
    "float_parsing": "write a number",
    "finite_number": "write a finite number (inf and nan are not allowed here)",
    "int_parsing": "write a whole number",
    "int_type": "write a whole number, without quotes",
    "bool_parsing": "write true or false",
    "literal_error": "use one of the listed values",
    "too_short": "give at least one entry",
    "gpu_profile": _PROFILE_FIX,
}


def _loc_to_field(loc: tuple[Any, ...], data: Any) -> str:
    out = ""
    node = data
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            label = None
            if isinstance(node, list) and part < len(node) and isinstance(node[part], dict):
                label = node[part].get("name") or node[part].get("id")
            if label:
                out += f"({label})"
            node = node[part] if isinstance(node, list) and part < len(node) else None
        else:
            if _UNION_TAG.match(str(part)) and not (isinstance(node, dict) and part in node):
                continue  # pydantic's name of a union branch, not a config key
            out += ("." if out else "") + str(part)
            node = node.get(part) if isinstance(node, dict) else None
    return out


_UNION_TAG = re.compile(r"^(constrained-\w+|list\[.*\]|dict\[.*\]|float|int|str|bool|none)$")


def _raise_validation(exc: ValidationError, source: str, data: Any) -> None:
    errs = exc.errors()
    # a union field (constant or list) reports one error per branch: show a non-finite value
    # first, else the deepest location (the branch the user wrote, e.g. the list item)
    head = tuple(errs[0]["loc"])
    while head and _UNION_TAG.match(str(head[-1])):
        head = head[:-1]
    same = [e for e in errs if tuple(e["loc"])[: len(head)] == head] or errs[:1]
    first = next((e for e in same if e["type"] == "finite_number"), None) or max(
        same, key=lambda e: len(e["loc"])
    )
    field = _loc_to_field(tuple(first["loc"]), data)
    msg = first["msg"].removeprefix("Value error, ")
    fix = _FIX_HINTS.get(first["type"], "see README.md 'Config format'")
    more = f" (and {len(errs) - 1} more problem(s))" if len(errs) > 1 else ""
    raise ConfigError(msg + more, source=source, field=field or None, fix=fix) from None


# ----------------------------------------------------------------------------- loading


def load_gpu_model(path: Path) -> GpuModelConfig:
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"not valid TOML: {exc}", source=str(path), fix="fix the TOML syntax"
        ) from None
    try:
        return GpuModelConfig.model_validate(data)
    except ValidationError as exc:
        _raise_validation(exc, str(path), data)
        raise  # unreachable


def load_gpu_models(models_dir: Path) -> dict[str, GpuModelConfig]:
    """All GPU profiles in ``models_dir``, keyed by name and by each alias (case-insensitive)."""
    out: dict[str, GpuModelConfig] = {}
    if not models_dir.is_dir():
        return out
    for path in sorted(models_dir.glob("*.toml")):
        model = load_gpu_model(path)
        for key in [model.name, *model.aliases]:
            out[key.lower()] = model
    return out


_JOB_COLUMNS = {
    "id",
    "gpus",
    "work_gpu_h",
    "release",
    "deadline",
    "jurisdictions",
    "user_region",
    "max_latency_ms",
    "checkpointable",
    "priority",
    "submit_site",
    "workload_class",
}


def load_jobs_csv(path: Path) -> list[JobConfig]:
    """Read jobs from CSV (columns as the ``[[jobs]]`` fields; jurisdictions ``;``-separated)."""
    if not path.is_file():
        raise ConfigError(
            "jobs file not found", source=str(path), fix="check jobs_file in the config"
        )
    jobs: list[JobConfig] = []
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        cols = set(reader.fieldnames or [])
        missing = {"id", "gpus", "work_gpu_h", "release", "deadline"} - cols
        if missing:
            raise ConfigError(
                f"missing column(s) {sorted(missing)}",
                source=str(path),
                fix="the header needs id,gpus,work_gpu_h,release,deadline",
            )
        unknown = cols - _JOB_COLUMNS
        if unknown:
            raise ConfigError(
                f"unknown column(s) {sorted(unknown)}",
                source=str(path),
                fix=f"use only {sorted(_JOB_COLUMNS)}",
            )
        for lineno, row in enumerate(reader, start=2):
            rec: dict[str, Any] = {k: v for k, v in row.items() if v not in (None, "")}
            if "jurisdictions" in rec:
                rec["jurisdictions"] = [
                    j.strip() for j in rec["jurisdictions"].split(";") if j.strip()
                ]
            if "checkpointable" in rec:
                val = rec["checkpointable"].strip().lower()
                if val not in {"true", "false", "1", "0", "yes", "no"}:
                    raise ConfigError(
                        f"checkpointable={rec['checkpointable']!r}",
                        source=f"{path}:{lineno}",
                        field="checkpointable",
                        fix="write true or false",
                    )
                rec["checkpointable"] = val in {"true", "1", "yes"}
            try:
                jobs.append(JobConfig.model_validate(rec))
            except ValidationError as exc:
                err = exc.errors()[0]
                field = ".".join(str(p) for p in err["loc"]) or None
                raise ConfigError(
                    err["msg"].removeprefix("Value error, "),
                    source=f"{path}:{lineno} (job {rec.get('id', '?')})",
                    field=field,
                    fix=_FIX_HINTS.get(err["type"], "see README.md 'Jobs'"),
                ) from None
    return jobs


JobFileReader = Callable[[Path, "datetime | None"], list[JobConfig]]
#: readers for ``jobs_file`` by suffix beyond CSV; :mod:`greencpn.sources.load` registers
#: ``.json`` (plain JSON and saved Slurm output) when imported. Core config imports no source.
JOB_FILE_READERS: dict[str, JobFileReader] = {}


def register_job_file_reader(suffix: str, reader: JobFileReader) -> None:
    """Let ``load_config`` read ``jobs_file`` entries ending in ``suffix`` with ``reader``."""
    JOB_FILE_READERS[suffix.lower()] = reader


def load_config(path: str | Path) -> FleetConfig:
    """Load, validate and cross-check a fleet config file."""
    path = Path(path).resolve()
    src = str(path)
    if not path.is_file():
        raise ConfigError(
            "config file not found", source=src, fix="pass --config PATH to a TOML file"
        )
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", source=src, fix="fix the TOML syntax") from None
    try:
        raw = FleetFile.model_validate(data)
    except ValidationError as exc:
        _raise_validation(exc, src, data)
        raise
    base = path.parent

    if raw.models_dir:
        models_dir = base / raw.models_dir
        if not models_dir.is_dir():
            raise ConfigError(
                f"models_dir {str(models_dir)!r} is not a directory",
                source=src,
                field="models_dir",
                fix="point it at a folder of GPU profile *.toml files, or remove it to use the "
                f"bundled profiles ({default_models_dir('gpus')})",
            )
    else:
        models_dir = default_models_dir("gpus")
    gpu_models = load_gpu_models(models_dir)
    for m in raw.gpu_models:
        for key in [m.name, *m.aliases]:
            gpu_models[key.lower()] = m

    jobs = list(raw.jobs)
    if raw.jobs_file:
        jobs_path = base / raw.jobs_file
        reader = JOB_FILE_READERS.get(jobs_path.suffix.lower())
        if reader is not None:
            # e.g. .json: a list of jobs, {"jobs": [...]}, or saved `squeue --json` output
            jobs = reader(jobs_path, raw.horizon.start) + jobs
        elif jobs_path.suffix.lower() != ".csv":
            raise ConfigError(
                f"no reader for {jobs_path.suffix or 'extension-less'} job files",
                source=src,
                field="jobs_file",
                fix="use a .csv file, or a .json file (its reader is registered by "
                "greencpn.sources.load, which the CLI and the control step import)",
            )
        else:
            jobs = load_jobs_csv(jobs_path) + jobs

    if raw.carbon is not None and (base / raw.carbon.file).is_dir():
        raise ConfigError(
            f"{base / raw.carbon.file} is a directory, not a carbon CSV file",
            source=src,
            field="carbon.file",
            fix="name the CSV file inside it (paths are relative to the config file)",
        )
    if raw.carbon is None and any(s.carbon_source is None for s in raw.sites):
        raise ConfigError(
            "no carbon data for some sites",
            source=src,
            field="carbon",
            fix='add [carbon] file = "carbon.csv", or carbon_source on every site',
        )
    cfg = FleetConfig(
        path=path,
        raw=raw,
        gpu_models=gpu_models,
        jobs=jobs,
        carbon_path=base / raw.carbon.file if raw.carbon else base,
    )
    check_config(cfg)
    check_job_actuation(cfg)
    return cfg


def check_config(cfg: FleetConfig) -> None:
    """Cross-field checks, one rule each; the first failure raises ConfigError."""
    src = str(cfg.path)
    raw = cfg.raw
    names = [s.name for s in raw.sites]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise ConfigError(
            f"duplicate site name(s) {sorted(dup)}",
            source=src,
            field="sites",
            fix="give every site a unique name",
        )
    pnames = [p.name for p in raw.pools]
    dup = {n for n in pnames if pnames.count(n) > 1}
    if dup:
        raise ConfigError(
            f"duplicate pool name(s) {sorted(dup)}",
            source=src,
            field="pools",
            fix="give every pool a unique name",
        )
    for i, s in enumerate(raw.sites):
        for fld in ("power_budget_kw", "price_per_kwh"):
            val = getattr(s, fld)
            if isinstance(val, list) and len(val) != raw.horizon.slots:
                raise ConfigError(
                    f"has {len(val)} values but the horizon has {raw.horizon.slots} slots",
                    source=src,
                    field=f"sites[{i}]({s.name}).{fld}",
                    fix="give one value per slot or a single constant",
                )
    for i, p in enumerate(raw.pools):
        where = f"pools[{i}]({p.name})"
        if p.site not in names:
            raise ConfigError(
                f"unknown site {p.site!r}",
                source=src,
                field=f"{where}.site",
                fix=f"use one of {names}",
            )
        if p.gpu_model.lower() not in cfg.gpu_models:
            known = sorted({m.name for m in cfg.gpu_models.values()})
            raise ConfigError(
                f"unknown GPU model {p.gpu_model!r}",
                source=src,
                field=f"{where}.gpu_model",
                fix=f"use one of {known} or add a profile under models/gpus/ or [[gpu_models]]",
            )
        gm = cfg.gpu_models[p.gpu_model.lower()]
        if p.node_idle_w < gm.idle_w * p.gpus_per_node:
            raise ConfigError(
                f"node_idle_w={p.node_idle_w} W is below {p.gpus_per_node} idle GPUs × {gm.idle_w} W",
                source=src,
                field=f"{where}.node_idle_w",
                fix="node_idle_w is the whole node powered on with idle GPUs",
            )
    check_hooks_and_hostlists(cfg)
    ids = [j.id for j in cfg.jobs]
    dup = {n for n in ids if ids.count(n) > 1}
    if dup:
        raise ConfigError(
            f"duplicate job id(s) {sorted(dup)[:5]}",
            source=src,
            field="jobs",
            fix="give every job a unique id",
        )
    classes = sorted(
        {c for p in raw.pools for c in cfg.gpu_models[p.gpu_model.lower()].class_names}
    )
    for j in cfg.jobs:
        if j.workload_class is not None and j.workload_class not in classes:
            raise ConfigError(
                f"workload_class {j.workload_class!r} is not a class of any pool's GPU model",
                source=src,
                field=f"jobs({j.id}).workload_class",
                fix=f"use one of {classes} (models/README.md 'Workload classes') or leave it "
                "out to plan the job on the model's median curve",
            )
    pools_by_site: dict[str, list[PoolConfig]] = {}
    for p in raw.pools:
        pools_by_site.setdefault(p.site, []).append(p)
    for j in cfg.jobs:
        allowed = allowed_sites(j, raw.sites)
        if not allowed:
            raise ConfigError(
                f"no site may run job {j.id!r} (jurisdictions {j.jurisdictions}, "
                f"region {j.user_region}, max latency {j.max_latency_ms} ms)",
                source=src,
                field=f"jobs({j.id})",
                fix="widen its jurisdictions or latency, or add a site that satisfies them",
            )
        if j.submit_site is not None and j.submit_site not in allowed:
            raise ConfigError(
                f"job {j.id!r} has submit_site {j.submit_site!r}, which may not run it "
                f"(allowed: {allowed})",
                source=src,
                field=f"jobs({j.id}).submit_site",
                fix=f"use one of {allowed}, or leave it empty ({SUBMIT_SITE_RULE})",
            )
        biggest = max(
            (p.nodes * p.gpus_per_node for s in allowed for p in pools_by_site.get(s, [])),
            default=0,
        )
        if j.gpus > biggest:
            raise ConfigError(
                f"job {j.id!r} needs {j.gpus} GPUs but the largest pool it may use has {biggest}",
                source=src,
                field=f"jobs({j.id}).gpus",
                fix="split the job or allow more sites",
            )


def check_hooks_and_hostlists(cfg: FleetConfig) -> None:
    """Every pool's hook table and hostlist, all problems in one :class:`ConfigError`.

    A pool with a hook (kind other than ``none``) needs a hostlist with exactly ``nodes``
    names; any hostlist must parse and no node may be in two pools; the hook table is checked
    as ``greencpn apply`` would build it (keys and values, not credentials). Each problem names
    its pool, e.g. ``pools[2](lon-a100).hook.bmcs``.
    """
    # lazy: the hook registry lives in actuate; it needs no network or optional dependency
    from greencpn.actuate.hooks import check_hook_table
    from greencpn.actuate.hostlist import expand

    src = str(cfg.path)
    problems: list[tuple[str, str]] = []  # (field, message)
    owner: dict[str, str] = {}
    for i, p in enumerate(cfg.raw.pools):
        where = f"pools[{i}]({p.name})"
        kind = p.hook.kind
        if p.hostlist is None:
            if kind != "none":
                problems.append(
                    (
                        f"{where}.hostlist",
                        f"missing: hook kind '{kind}' needs the pool's {p.nodes} node names "
                        '(write e.g. hostlist = "gpu[001-040]")',
                    )
                )
        else:
            try:
                names = expand(p.hostlist)
            except ConfigError as exc:
                problems.append((f"{where}.hostlist", exc.reason))
                names = []
            else:
                if len(names) != p.nodes:
                    problems.append(
                        (
                            f"{where}.hostlist",
                            f"{p.hostlist!r} gives {len(names)} name(s) for nodes = {p.nodes}",
                        )
                    )
            twice = [n for n in names if n in owner]
            if twice:
                problems.append(
                    (
                        f"{where}.hostlist",
                        f"node(s) {', '.join(twice[:5])} also in {owner[twice[0]]}",
                    )
                )
            for n in names:
                owner.setdefault(n, where)
        if p.hook.advisory and kind != "none":
            problems.append(
                (
                    f"{where}.hook.advisory",
                    f"advisory applies to kind 'none' only (this pool's hook is '{kind}', "
                    "which greencpn switches); remove it",
                )
            )
        # every kind, "none" too: its table takes no keys (a stray power_on there would
        # otherwise be accepted silently and switch nothing)
        table = {"kind": kind, **(p.hook.model_extra or {})}
        try:
            check_hook_table(table, source=src)
        except ConfigError as exc:
            fld = (exc.field or "hook").removeprefix("hook")
            problems.append((f"{where}.hook{fld}", f"{exc.reason} (fix: {exc.fix})"))
    if problems:
        raise ConfigError(
            f"{len(problems)} problem(s) with node hooks or hostlists: "
            + "; ".join(f"{f}: {m}" for f, m in problems),
            source=src,
            field=problems[0][0],
            fix="correct each field named above (see docs/node-hooks.md)",
        )


def check_job_actuation(cfg: FleetConfig) -> None:
    """``[job_actuation]``: its clusters name known sites, their pools known pools."""
    ja = cfg.raw.job_actuation
    if ja is None:
        return
    src = str(cfg.path)
    sites = {s.name for s in cfg.raw.sites}
    pools = {p.name: p.site for p in cfg.raw.pools}
    for i, c in enumerate(ja.clusters):
        where = f"job_actuation.clusters[{i}]({c.name})"
        for site in c.sites:
            if site not in sites:
                raise ConfigError(
                    f"unknown site {site!r}",
                    source=src,
                    field=f"{where}.sites",
                    fix=f"use one of {sorted(sites)}",
                )
        for pool in c.pools:
            if pool not in pools:
                raise ConfigError(
                    f"unknown pool {pool!r}",
                    source=src,
                    field=f"{where}.pools.{pool}",
                    fix=f"use one of {sorted(pools)}",
                )
            if pools[pool] not in c.sites:
                raise ConfigError(
                    f"pool {pool!r} is at site {pools[pool]!r}, not one of this cluster's sites",
                    source=src,
                    field=f"{where}.pools.{pool}",
                    fix=f"add {pools[pool]!r} to sites or move the pool to its own cluster",
                )
        if c.steer != "none":
            missing = [p for p, site in pools.items() if site in c.sites and p not in c.pools]
            if missing:
                raise ConfigError(
                    f'steer = "{c.steer}" but pool(s) {missing} have no entry',
                    source=src,
                    field=f"{where}.pools",
                    fix=f"add [job_actuation.clusters.pools.{missing[0]}] with the {c.steer}",
                )


#: how the carbon-agnostic baseline picks a job's site when the job has no ``submit_site``
SUBMIT_SITE_RULE = "the allowed site with the most GPUs (ties: the site name, alphabetically)"


def baseline_submit_site(
    job: JobConfig, sites: list[SiteConfig], pools: list[PoolConfig]
) -> tuple[str, str]:
    """The site the carbon-agnostic baseline starts the job at and the rule that chose it:
    its ``submit_site`` field, else :data:`SUBMIT_SITE_RULE` (independent of the order in
    which sites and pools are written)."""
    if job.submit_site is not None:
        return job.submit_site, "job field submit_site"
    allowed = allowed_sites(job, sites)
    gpus = {s: 0 for s in allowed}
    for p in pools:
        if p.site in gpus:
            gpus[p.site] += p.nodes * p.gpus_per_node
    return min(allowed, key=lambda s: (-gpus[s], s)), "most GPUs"


def allowed_sites(job: JobConfig, sites: list[SiteConfig]) -> list[str]:
    """Sites that satisfy the job's data residency and latency limit."""
    out = []
    for s in sites:
        if job.jurisdictions and not set(job.jurisdictions) & set(s.jurisdictions):
            continue
        if job.user_region is not None and job.max_latency_ms is not None:
            lat = s.latency_ms.get(job.user_region)
            if lat is None or lat > job.max_latency_ms:
                continue
        out.append(s.name)
    return out


def slot_times(start: datetime, slots: int, slot_minutes: int) -> list[datetime]:
    step = timedelta(minutes=slot_minutes)
    return [start + i * step for i in range(slots)]


def per_slot(
    value: float | list[float] | None, slots: int, default: float = math.inf
) -> list[float]:
    if value is None:
        return [default] * slots
    if isinstance(value, list):
        return [float(v) for v in value]
    return [float(value)] * slots
