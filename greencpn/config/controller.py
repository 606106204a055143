"""``[controller]``: how the control step re-plans and acts."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from greencpn.config.base import NonNegFloat, _Strict


class ControllerConfig(_Strict):
    """``[controller]``: how the control step re-plans and acts (every field optional)."""

    preempt_checkpointable: bool = Field(
        default=False,
        description="a running checkpointable job may be moved by a re-plan (else it keeps its pool)",
    )
    node_flap_weight: NonNegFloat = Field(
        default=0.5,
        description="objective units per node and slot whose on/off state differs from the "
        "previous plan's (|n - n_prev| summed over the slots both plans cover; stability)",
    )
    node_flap_horizon_h: float | None = Field(
        default=None,
        gt=0,
        description="hours from the horizon's start in which node_flap_weight is charged (the "
        "slots the step is about to act on); unset = every slot both plans cover",
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
        default=False,
        description="the step also tries the job-level MILP where it is small enough "
        "(solver.joblevel_time_limit_s). Off by default: on the example fleet it was built in "
        "17 of 24 steps, won none and made each of them seconds to a minute slower "
        "(bench/results/controller.md); `greencpn plan` still tries it",
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
