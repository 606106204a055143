"""The fleet: sites, pools, the whole file (:class:`FleetFile`), the loaded
:class:`FleetConfig`, and the siting rules that join jobs to sites."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from greencpn.config.base import NonNegFloat, PositiveFloat, _Strict
from greencpn.config.controller import ControllerConfig
from greencpn.config.gpu import GpuModelConfig
from greencpn.config.hooks import HookConfig, NoneHookConfig
from greencpn.config.job_actuation import JobActuationConfig
from greencpn.config.jobs import JobConfig
from greencpn.config.planning import CarbonConfig, HorizonConfig, ObjectiveConfig, SolverConfig


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
    hook: HookConfig = Field(default_factory=NoneHookConfig)

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
    """A validated config with its files resolved (paths absolute, GPU models loaded).

    Callers read the file's sections through the properties below (``cfg.horizon``,
    ``cfg.controller``, …) and its file names already resolved against the config's folder
    (:attr:`jobs_file_path`, :attr:`actuals_path`); ``raw`` (the file as validated) is the
    loader's. :meth:`with_sections` gives a copy with sections replaced (the controller's
    overrides, the what-if replay's site tags).
    """

    path: Path
    raw: FleetFile
    gpu_models: dict[str, GpuModelConfig]
    jobs: list[JobConfig]
    carbon_path: Path

    @property
    def name(self) -> str:
        return self.raw.name

    @property
    def currency(self) -> str | None:
        return self.raw.currency

    @property
    def horizon(self) -> HorizonConfig:
        return self.raw.horizon

    @property
    def objective(self) -> ObjectiveConfig:
        return self.raw.objective

    @property
    def solver(self) -> SolverConfig:
        return self.raw.solver

    @property
    def controller(self) -> ControllerConfig:
        return self.raw.controller

    @property
    def carbon(self) -> CarbonConfig | None:
        return self.raw.carbon

    @property
    def job_actuation(self) -> JobActuationConfig | None:
        return self.raw.job_actuation

    @property
    def sites(self) -> list[SiteConfig]:
        return self.raw.sites

    @property
    def pools(self) -> list[PoolConfig]:
        return self.raw.pools

    @property
    def jobs_file(self) -> str | None:
        """``jobs_file`` as written in the config (see :attr:`jobs_file_path`)."""
        return self.raw.jobs_file

    @property
    def jobs_file_path(self) -> Path | None:
        """``jobs_file`` resolved against the config's folder (None: jobs only in [[jobs]])."""
        jf = self.raw.jobs_file
        return None if jf is None else self.path.parent / jf

    @property
    def actuals_path(self) -> Path | None:
        """``[carbon] actuals_file`` resolved against the config's folder (None: not given)."""
        c = self.raw.carbon
        if c is None or c.actuals_file is None:
            return None
        return self.path.parent / c.actuals_file

    def with_sections(self, **sections: object) -> FleetConfig:
        """A copy with whole sections of the file replaced (``sites=[...]``,
        ``solver=SolverConfig(...)``); the values are taken as they are (validate them first)."""
        return FleetConfig(
            path=self.path,
            raw=self.raw.model_copy(update=sections),
            gpu_models=self.gpu_models,
            jobs=self.jobs,
            carbon_path=self.carbon_path,
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
