"""Jobs never wait on a dead greencpn: ``greencpn jobs release-expired`` and restore-on-exit.

Slurm begin times release a job by themselves; holds and Kubernetes scheduling gates do not.
Two paths that need no running controller:

* :func:`release_expired` (``greencpn jobs release-expired``, e.g. a Kubernetes CronJob every
  minute): every pending pod still behind greencpn's gate whose ``greencpn.io/release-by``
  annotation (else its latest safe start by the ``[job_actuation]`` rules) has passed is
  released — the gate removed, the planned node affinity added. It reads everything from the
  API (no state dir needed). With ``--state-dir``, Slurm / command jobs that greencpn holds
  (``defer_with = "hold"``) are released once their latest safe start (from the ledger) has
  passed, and every release is a ledger row (``failsafe_release``).
* :func:`restore_jobs_on_exit` (the daemon's ``on_exit = "restore"``, and
  ``greencpn jobs restore``): every job greencpn touched is put back from the ledger's
  originals (begin time, hold, partition / features / nodes) as ``--undo-jobs`` does, every pod
  still behind greencpn's gate is released, and the Kubernetes heartbeat lease is deleted so
  the webhook stops gating at once. One ledger apply (mode ``restore-on-exit``) records it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from greencpn.actuate.jobs import JobBackends, make_job_backends, undo_all_jobs
from greencpn.actuate.jobs.apply_step import recorded_apply
from greencpn.actuate.jobs.base import JobNotFoundError, JobNotPendingError
from greencpn.actuate.jobs.engine import JobOutcome, JobPolicy, JobReport, gated_release_by
from greencpn.actuate.ledger import Ledger, _iso
from greencpn.errors import ConfigError

if TYPE_CHECKING:
    from greencpn.config import FleetConfig

PHASE = "jobs"


def _release(
    backends: JobBackends,
    cluster: str,
    job_id: str,
    action: str,
    reason: str,
    ledger: Ledger | None,
    apply_id: int | None,
    now: datetime,
    report: JobReport,
    dry_run: bool,
) -> None:
    act = backends.actuators[cluster]
    if dry_run:
        report.outcomes.append(JobOutcome(cluster, job_id, action, "dry-run", "would " + reason))
        return
    sid = None
    if ledger is not None and apply_id is not None:
        sid = ledger.intent(
            apply_id,
            now,
            phase=PHASE,
            action=action,
            pool=None,
            targets=[job_id],
            detail={"cluster": cluster, "reason": reason},
        )
    detail: dict[str, Any]
    try:
        change = act.release(job_id)
    except (JobNotPendingError, JobNotFoundError) as exc:
        status, msg, detail = "skipped", str(exc), {"error": str(exc)}
        changes: tuple[Any, ...] = ()
    except Exception as exc:  # API down, RBAC: reported, the next job goes on
        status, msg = "error", f"{type(exc).__name__}: {exc}"
        detail, changes = {"error": msg}, ()
    else:
        status = "ok" if change.after is False else "error"
        msg = f"{reason}: {change.message or 'released'}"
        detail = {
            "changes": [{"what": change.what, "before": change.before, "after": change.after}]
        }
        changes = (change,)
        if ledger is not None and status == "ok" and ledger.job(cluster, job_id) is not None:
            ledger.update_job(cluster, job_id, held_by_us=False, release_at=None)
    if ledger is not None and sid is not None:
        ledger.result(sid, now, status, detail)
    report.outcomes.append(JobOutcome(cluster, job_id, action, status, msg, changes))


def release_expired(
    backends: JobBackends,
    *,
    now: datetime,
    ledger: Ledger | None = None,
    apply_id: int | None = None,
    dry_run: bool = False,
) -> JobReport:
    """Release every job whose fail-safe time has passed (see the module docstring)."""
    report = JobReport()
    policy = JobPolicy.from_config(backends.config)
    for name, act in backends.actuators.items():
        if not act.supports_begin_time:  # Kubernetes: the gate and the annotation say it all
            try:
                pending = act.pending_jobs()
            except Exception as exc:
                err = f"{type(exc).__name__}: {exc}"
                report.outcomes.append(JobOutcome(name, "-", "read_pending", "error", err))
                continue
            for job in pending:
                if not (job.gated and job.held):
                    continue
                by = gated_release_by(job, policy)
                if by is not None and by <= now:
                    why = f"release-by {_iso(by)} passed (greencpn jobs release-expired)"
                    _release(
                        backends, name, job.id, "failsafe_release", why, ledger, apply_id, now,
                        report, dry_run,
                    )  # fmt: skip
            continue
        if ledger is None:
            continue  # holds on Slurm / command are known from the ledger only
        for rec in ledger.jobs(name):
            if not rec.held_by_us or rec.restored_at is not None:
                continue
            lss = rec.latest_safe_start
            if lss is not None and lss <= now:
                why = f"latest safe start {_iso(lss)} passed (greencpn jobs release-expired)"
                _release(
                    backends, name, rec.job_id, "failsafe_release", why, ledger, apply_id, now,
                    report, dry_run,
                )  # fmt: skip
    return report


def restore_jobs_on_exit(
    backends: JobBackends, ledger: Ledger, apply_id: int, *, clock_now: Callable[[], datetime]
) -> JobReport:
    """Put every touched job back (``--undo-jobs``), release every pod still behind greencpn's
    gate, and drop the heartbeat lease (the webhook stops gating)."""
    report = undo_all_jobs(backends, ledger, apply_id, clock_now=clock_now)
    for name, act in backends.actuators.items():
        if act.supports_begin_time:
            continue
        try:
            pending = act.pending_jobs()
        except Exception as exc:
            err = f"{type(exc).__name__}: {exc}"
            report.outcomes.append(JobOutcome(name, "-", "read_pending", "error", err))
            pending = []
        for job in pending:
            if job.gated and job.held:
                _release(
                    backends, name, job.id, "release", "greencpn stopping (restore on exit)",
                    ledger, apply_id, clock_now(), report, False,
                )  # fmt: skip
        resign = getattr(act, "resign", None)
        if callable(resign):
            try:
                resign()
                status, msg = "ok", "heartbeat lease deleted: the webhook stops gating"
            except Exception as exc:
                status, msg = "error", f"{type(exc).__name__}: {exc}"
            ledger.record(
                apply_id,
                clock_now(),
                phase=PHASE,
                action="resign",
                pool=None,
                targets=[name],
                status=status,
                detail={"message": msg},
            )
            report.outcomes.append(JobOutcome(name, "-", "resign", status, msg))
    return report


def restore_on_exit(
    config: FleetConfig, state_dir: str | Path, *, clock_now: Callable[[], datetime]
) -> JobReport | None:
    """The daemon's exit path: :func:`restore_jobs_on_exit` over the config's
    ``[job_actuation]`` (None when it has none), one ledger apply (``restore-on-exit``) in
    ``<state_dir>/ledger.sqlite``. Never raises for a scheduler fault (reported per job)."""
    backends = make_job_backends(config.job_actuation, source=str(config.path))
    if backends is None:
        return None
    return recorded_apply(
        state_dir,
        "restore-on-exit",
        lambda ledger, apply_id: restore_jobs_on_exit(
            backends, ledger, apply_id, clock_now=clock_now
        ),
        clock_now=clock_now,
    )


# --------------------------------------------------------------------------- CLI


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "jobs",
        help="job fail-safes that need no running greencpn (release-expired, restore)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="jobs_command", metavar="ACTION", required=True)
    r = sub.add_parser(
        "release-expired",
        help="release gated pods / held jobs whose release-by (latest safe start) has passed",
    )
    r.add_argument("--config", required=True, help="fleet config with [job_actuation]")
    r.add_argument(
        "--state-dir",
        help="apply ledger: also release Slurm/command holds past their latest safe start, "
        "and record every release (default: Kubernetes only, nothing recorded)",
    )
    r.add_argument("--dry-run", action="store_true", help="print what would be released")
    r.set_defaults(func=_run_release_expired)
    s = sub.add_parser("restore", help="restore every touched job now (what on_exit does)")
    s.add_argument("--config", required=True)
    s.add_argument("--state-dir", default=".greencpn")
    s.set_defaults(func=_run_restore)


def _backends(path: str) -> tuple[FleetConfig, JobBackends]:
    from greencpn.config import load_config

    config = load_config(path)
    backends = make_job_backends(config.job_actuation, source=str(config.path))
    if backends is None:
        raise ConfigError(
            "the config has no [job_actuation] section",
            source=str(config.path),
            field="job_actuation",
            fix="add [job_actuation] with at least one [[job_actuation.clusters]]",
        )
    return config, backends


def _print(report: JobReport, what: str) -> int:
    text = report.format()
    print(text if text else f"  nothing to {what}")
    return 1 if report.problems else 0


def _run_release_expired(args: argparse.Namespace) -> int:
    from greencpn.clock import SystemClock

    clock = SystemClock()
    _, backends = _backends(args.config)
    if args.state_dir and not args.dry_run:
        with Ledger.open(args.state_dir) as ledger:
            aid = ledger.begin_apply(
                clock.now(), plan_path=None, slot=None, slot_start=None, mode="release-expired"
            )
            report = release_expired(backends, now=clock.now(), ledger=ledger, apply_id=aid)
            ledger.finish_apply(
                aid, clock.now(), "partial" if report.problems else "applied",
                {"jobs": report.counts},
            )  # fmt: skip
    elif args.state_dir:
        with Ledger.open_readonly(args.state_dir) as ro:
            report = release_expired(backends, now=clock.now(), ledger=ro, dry_run=True)
    else:
        report = release_expired(backends, now=clock.now(), dry_run=args.dry_run)
    print(f"greencpn jobs release-expired at {_iso(clock.now().replace(microsecond=0))}")
    return _print(report, "release")


def _run_restore(args: argparse.Namespace) -> int:
    from greencpn.clock import SystemClock

    clock = SystemClock()
    config, _ = _backends(args.config)
    report = restore_on_exit(config, args.state_dir, clock_now=clock.now)
    assert report is not None
    print(f"greencpn jobs restore at {_iso(clock.now().replace(microsecond=0))}")
    return _print(report, "restore")
