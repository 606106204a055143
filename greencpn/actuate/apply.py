"""Apply one slot of a plan to the fleet, safely.

``apply_plan`` reads the plan's target for one slot (per pool: nodes on and the GPU power
cap), observes the fleet (node status through each pool's hook, GPU caps through each node's
:class:`~greencpn.actuate.base.GpuBackend`), computes the diff, prints it, and — unless it is a
dry run or the controller is in shadow mode — carries it out in this order:

1. **lower caps** on GPUs whose cap is above the target (power goes down first);
2. **drain** the nodes chosen for power-off (all pools) and wait (bounded, one deadline for
   all) until they are idle; a node still busy is resumed (if greencpn drained it), skipped
   and reported;
3. **power off** the idle drained nodes; a hook that carries the power-off out later (the
   node agent's 202) is asked until it says so (``power_off_confirm_s``), and a node whose
   power-off was aborted (work appeared at the agent's final check) is recorded as on;
4. **power on** the nodes chosen for start-up (wake before work moves there);
5. **wait for boot** (bounded by each pool's boot timeout); a node not up in time is marked
   *failed* and left alone;
6. **resume** nodes greencpn drained that are on again, so the scheduler can use them;
7. **raise caps** (and set caps on freshly booted nodes) — power goes up last.

Steps 4–7 increase power; they are skipped at a site where a power-reducing step (1–3) failed
with an error, so a site never ends above the plan because a reduction failed. Power
operations (3, 4) draw from the rate limiter, round-robin over pools; those without a token
are deferred to a later apply. Every step is written to the ledger before it runs (intent) and after (result); on a GPU
error the caps already set on that pool in that step are rolled back, and the rollback is
recorded too. See :mod:`greencpn.actuate.safety` for the rules.

**Rooms.** This module keeps only the sequencing (:func:`apply_plan`, :func:`_apply_locked`);
each role has its own module under ``greencpn/actuate/``:

==================  ==========================================================================
``plan_file.py``    the plan file against its schema and against the fleet config
``plan_slot.py``    :func:`load_plan`, :class:`SlotRef`, :func:`resolve_slot`, the stale-slot warning
``reconcile.py``    observe the fleet → per-pool :class:`PoolDiff` (:func:`compute_diff`, in named
                    steps); :class:`Backends`, :class:`CapChange`
``phases/``         the steps above, one module per phase (``observe``, ``caps``, ``power``,
                    ``boot``) over a shared ``state``; :class:`~greencpn.actuate.phases.Run`
``journal.py``      every step to the ledger (intent → result) and to the report
``execution.py``    the one place a call's exception becomes an :class:`Outcome`; a
                    ``TemporaryError(retry_after_s)`` is retried within ``retry_budget_s``
``outcomes.py``     typed statuses (:class:`StepStatus`, :class:`Mode`, :class:`ApplyOutcome`
                    StrEnums, values as in the ledger), :class:`StepOutcome`
``report.py``       :class:`ApplyReport` (verdict, exit status)
``render.py``       :func:`format_diff` and the report's text
==================  ==========================================================================

Every name other code imports from here is re-exported (``__all__``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from greencpn.actuate.hooks._common import HookLifecycle, hook_lifecycle
from greencpn.actuate.ledger import Ledger
from greencpn.actuate.outcomes import (
    EXIT_NOT_OBSERVABLE,
    ApplyOutcome,
    Mode,
    StepOutcome,
    StepStatus,
)
from greencpn.actuate.phases import TOKEN_KEY, Run
from greencpn.actuate.plan_file import SCHEMA_RE, check_plan_against_config, validate_plan
from greencpn.actuate.plan_slot import (
    PLAN_SCHEMA_PREFIX,
    SlotRef,
    load_plan,
    other_slot_warning,
    resolve_slot,
)
from greencpn.actuate.reconcile import (
    CAP_TOLERANCE_W,
    NO_GPU_BACKEND,
    Backends,
    CapChange,
    PoolDiff,
    compute_diff,
    unobservable,
)
from greencpn.actuate.render import format_diff, format_report, unobservable_line
from greencpn.actuate.report import ApplyReport
from greencpn.actuate.safety import ControlSettings
from greencpn.clock import Clock
from greencpn.config import FleetConfig
from greencpn.errors import ConfigError

__all__ = [
    "CAP_TOLERANCE_W",
    "EXIT_NOT_OBSERVABLE",
    "NO_GPU_BACKEND",
    "PLAN_SCHEMA_PREFIX",
    "SCHEMA_RE",
    "TOKEN_KEY",
    "ApplyOutcome",
    "ApplyReport",
    "Backends",
    "CapChange",
    "Mode",
    "PoolDiff",
    "SlotRef",
    "StepOutcome",
    "StepStatus",
    "_Run",
    "apply_plan",
    "compute_diff",
    "format_diff",
    "format_report",
    "load_plan",
    "other_slot_warning",
    "resolve_slot",
    "unobservable",
    "unobservable_line",
]

_Run = Run
"""The phases of one apply under its old name (the control step drives it directly)."""


def apply_plan(
    plan: dict[str, Any],
    slot: str | int,
    config: FleetConfig,
    backends: Backends,
    *,
    clock: Clock,
    state_dir: str | Path,
    settings: ControlSettings | None = None,
    dry_run: bool = False,
    plan_path: str | None = None,
    sleep: Callable[[float], None] | None = None,
    echo: Callable[[str], None] | None = None,
    allow_other_slot: bool = False,
    jobs: Any = None,
) -> ApplyReport:
    """Observe, diff and (unless dry-run or shadow) apply one slot of ``plan``.

    Args:
        plan: the plan dict (docs/plan-schema.md).
        slot: a slot index or ``"now"``.
        config: the fleet config the plan was made with (pool timing, spares, hostlists).
        backends: node hooks per pool and GPU backends per node.
        clock: the time source; ``sleep`` waits (tests pass one that advances a SimClock).
        state_dir: where the ledger lives.
        settings: control settings (shadow by default).
        dry_run: show the diff only; nothing is changed or written.
        echo: called with the diff text before anything is changed (the CLI prints it).
        allow_other_slot: act on a slot that is not the current one (else refused when
            actuation is allowed, warned about otherwise).
        jobs: a :class:`greencpn.actuate.jobs.JobBackends`: job actions for the slot run after
            the node phases, in the same mode (shadow records what would be done).
    """
    settings = settings or ControlSettings()
    sleep = sleep or time.sleep
    # before anything is observed: the plan against its schema, then against the config
    validate_plan(plan, plan_path)
    check_plan_against_config(plan, config, plan_path)
    ref = resolve_slot(plan, slot, clock, source=plan_path)
    mode = Mode.DRY_RUN if dry_run else (Mode.ACT if settings.allow_actuation else Mode.SHADOW)
    warnings: list[str] = []
    stale = other_slot_warning(plan, ref, clock.now())
    if stale is not None:
        if mode == Mode.ACT and not allow_other_slot:
            raise ConfigError(
                stale + "; refusing to act on it",
                source=plan_path,
                field="--slot",
                fix="pass --slot now (or make a fresh plan); to apply this slot anyway, add "
                "--allow-other-slot",
            )
        warnings.append(stale)
    ledger = Ledger.open_readonly(state_dir) if dry_run else Ledger.open(state_dir)
    lifecycle = (
        HookLifecycle()
        if dry_run or ledger.lock_fd is None
        else HookLifecycle(
            pass_fds=(ledger.lock_fd,), on_start=ledger.lease_add, on_end=ledger.lease_remove
        )
    )
    try:
        with hook_lifecycle(lifecycle):
            return _apply_locked(
                plan, ref, config, backends, ledger, clock, settings, sleep, mode,
                dry_run=dry_run, plan_path=plan_path, echo=echo, warnings=warnings, jobs=jobs,
            )  # fmt: skip
    finally:
        ledger.close()


def _apply_locked(
    plan: dict[str, Any],
    ref: SlotRef,
    config: FleetConfig,
    backends: Backends,
    ledger: Ledger,
    clock: Clock,
    settings: ControlSettings,
    sleep: Callable[[float], None],
    mode: Mode,
    *,
    dry_run: bool,
    plan_path: str | None,
    echo: Callable[[str], None] | None,
    warnings: list[str],
    jobs: Any = None,
) -> ApplyReport:
    """The part of :func:`apply_plan` that runs with the ledger (and the apply lock) open."""
    # observe first: the nodes an interrupted apply touched are re-observed (and that is
    # recorded) before anything else touches them
    diffs = compute_diff(
        plan, ref, config, backends, ledger, settings, clock.now(), source=plan_path
    )
    observed = {s.name: s.power.value for d in diffs for s in d.statuses}
    interrupted: list[str] = []
    if dry_run:
        apps, steps = ledger.unfinished()
    else:
        apps, steps = ledger.close_unfinished(clock.now(), observed)
    for a in apps:
        interrupted.append(f"apply #{a.id} started {a.started_at.isoformat()} never finished")
    for s in steps:
        seen = ", ".join(f"{n}={observed.get(n, 'unknown')}" for n in s.targets if ":" not in n)
        interrupted.append(
            f"apply #{s.apply_id} step {s.seq} {s.action} on {','.join(s.targets)} "
            f"has no recorded result; re-observed: {seen or '-'}"
        )
    report = ApplyReport(
        slot=ref, mode=mode, diffs=diffs, interrupted=interrupted, warnings=warnings
    )
    if echo is not None:
        echo(format_diff(diffs, ref, plan_path=plan_path, mode=mode))
    if dry_run:
        return report
    apply_id = ledger.begin_apply(
        clock.now(), plan_path=plan_path, slot=ref.index, slot_start=ref.start, mode=mode
    )
    report.apply_id = apply_id
    run = _Run(diffs, report, backends, ledger, settings, clock, sleep, apply_id)
    try:
        if mode == Mode.ACT:
            run.run()
        else:
            run.shadow()
        if jobs is not None:
            from greencpn.actuate.jobs.apply_step import jobs_step

            report.jobs = jobs_step(
                plan,
                diffs,
                jobs,
                ledger,
                apply_id,
                clock_now=clock.now,
                next_step_at=ref.end,
                shadow=mode != Mode.ACT,
            )
    except BaseException as exc:  # an unexpected fault: record it, then let it surface
        ledger.finish_apply(
            apply_id,
            clock.now(),
            ApplyOutcome.ERROR,
            {"error": f"{type(exc).__name__}: {exc}", "steps": len(report.steps)},
        )
        raise
    ledger.finish_apply(
        apply_id,
        clock.now(),
        report.outcome,
        {
            "slot": ref.index,
            "steps": len(report.steps),
            "problems": len(report.problems),
            "failed_nodes": report.failed_nodes,
            "unknown_nodes": report.unknown_nodes,
        },
    )
    return report
