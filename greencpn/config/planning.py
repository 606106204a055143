"""The planning tables: ``[horizon]``, ``[objective]``, ``[solver]`` and ``[carbon]``."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from greencpn.config.base import NonNegFloat, PositiveFloat, _parse_utc, _Strict


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
    job_cap_slowdown: Literal["bound", "expected"] = Field(
        default="bound",
        description="cap_mode = job: the throughput a job's own cap must meet its deadline at — "
        "bound: the level's throughput_low where its profile has one (a lower confidence bound "
        "from the spread of the metered runs, `models fit --from-ledger --per-workload "
        "--confidence`), so a cap whose slowdown is within the deadline only on the noisy "
        "estimate is not chosen; expected: the fitted throughput alone. Profiles without "
        "throughput_low (the bundled ones) behave the same either way",
    )
    baselines_worker: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="price the report baselines in a worker process while the MILP is built "
        "and solved (the same figures; in-process if the worker fails): on, off, or auto — on "
        "for the control step's re-plans with at least 1000 jobs and two usable CPUs (a one-off "
        "greencpn plan stays in-process unless on)",
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
