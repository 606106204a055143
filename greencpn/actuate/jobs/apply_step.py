"""The job phase of ``greencpn apply`` (kept here so apply.py only calls two functions).

:func:`jobs_step` runs after the node phases of one apply: it knows which pools are ready (their
nodes are on) from the apply's diffs and the ledger, and acts on the jobs of the slot.
:func:`undo_step` is ``greencpn apply --undo-jobs``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from greencpn.actuate.jobs import JobBackends, JobReport, act_on_jobs, undo_all_jobs
from greencpn.actuate.ledger import Ledger

if TYPE_CHECKING:
    from greencpn.actuate.apply import PoolDiff


def pools_ready(diffs: Sequence[PoolDiff], ledger: Ledger) -> dict[str, bool]:
    """Per pool: are the nodes the plan wants on actually on (none still booting)?

    A pool greencpn does not actuate counts as ready (nothing of greencpn's holds it back).
    """
    out: dict[str, bool] = {}
    for d in diffs:
        if not d.actuated:
            out[d.name] = True
            continue
        on = sum(1 for n in d.nodes if (ledger.node(n).power or "") == "on")
        observed_on = d.on_now if not d.power_on else 0
        out[d.name] = max(on, observed_on) >= d.target_nodes_on
    return out


def jobs_step(
    plan: Mapping[str, Any],
    diffs: Sequence[PoolDiff],
    backends: JobBackends,
    ledger: Ledger,
    apply_id: int,
    *,
    clock_now: Callable[[], datetime],
    next_step_at: datetime,
    shadow: bool,
) -> JobReport:
    ready = pools_ready(diffs, ledger)
    report = act_on_jobs(
        plan,
        backends,
        ledger,
        apply_id,
        clock_now=clock_now,
        next_step_at=next_step_at,
        pool_ready=lambda pool: ready.get(pool, True),
        shadow=shadow,
    )
    if report.outcomes:  # the job phase's counters (e.g. failsafe_release_ok) in one row
        ledger.record(
            apply_id,
            clock_now(),
            phase="jobs",
            action="summary",
            pool=None,
            targets=sorted({o.cluster for o in report.outcomes}),
            status="ok",
            detail={"counts": report.counts, "pools_ready": ready},
        )
    return report


def recorded_apply(
    state_dir: str | Path,
    mode: str,
    run: Callable[[Ledger, int], JobReport],
    *,
    clock_now: Callable[[], datetime],
) -> JobReport:
    """Run ``run(ledger, apply_id)`` inside one ledger apply of ``mode`` (no plan, no slot),
    finished as ``partial`` when any job had a problem, else ``applied``."""
    with Ledger.open(state_dir) as ledger:
        apply_id = ledger.begin_apply(
            clock_now(), plan_path=None, slot=None, slot_start=None, mode=mode
        )
        report = run(ledger, apply_id)
        ledger.finish_apply(
            apply_id,
            clock_now(),
            "partial" if report.problems else "applied",
            {"jobs": report.counts},
        )
    return report


def undo_step(
    backends: JobBackends, state_dir: str, *, clock_now: Callable[[], datetime]
) -> JobReport:
    """Restore every touched job; one ledger apply (mode ``undo-jobs``) records it."""
    return recorded_apply(
        state_dir,
        "undo-jobs",
        lambda ledger, apply_id: undo_all_jobs(backends, ledger, apply_id, clock_now=clock_now),
        clock_now=clock_now,
    )


def preview_step(
    plan: Mapping[str, Any],
    backends: JobBackends,
    state_dir: str,
    *,
    now: datetime,
    next_step_at: datetime,
) -> list[str]:
    """``apply --dry-run``: what the job phase would do, reading the schedulers and the ledger
    only (nothing is changed or recorded). Pools count as ready (the dry run boots nothing)."""
    from greencpn.actuate.jobs import JobPolicy, decide, planned_jobs, steer_targets
    from greencpn.actuate.jobs.execution import _describe

    lines: list[str] = []
    plan_jobs = planned_jobs(plan)
    policy = JobPolicy.from_config(backends.config)
    with Ledger.open_readonly(state_dir) as ledger:
        for name, actuator in backends.actuators.items():
            ccfg = backends.cluster(name)
            try:
                pending = actuator.pending_jobs()
            except Exception as exc:  # a dry run reports, never fails on a scheduler fault
                lines.append(f"  [error   ] jobs        read_pending     {name}  — {exc}")
                continue
            actions = decide(
                pending,
                plan_jobs,
                policy,
                now=now,
                next_step_at=next_step_at,
                pool_ready=lambda pool: True,
                targets=steer_targets(ccfg),
                records={r.job_id: r for r in ledger.jobs(name)},
                sites=ccfg.sites,
                supports_begin_time=actuator.supports_begin_time,
                cluster=name,
            )
            for a in actions:
                what = a.reason if a.kind == "skip" else "would " + _describe(a)
                lines.append(f"  [dry-run ] jobs        {a.kind:16} {name:12} {a.job_id}  — {what}")
    return lines
