"""The cap phases: lower caps first (1), raise caps last (7); a GPU error rolls back the caps
already set on that pool in that step, and skips the power-raising steps at its site.

A running job with its own cap (plan ``jobs[].power_cap_w``) is its own step in each phase:
its GPUs are set to the job's cap and read back; an error on one of them rolls back that
job's GPUs (never a half-capped job) and is reported, and the other jobs and the pool's other
GPUs are still set."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from greencpn.actuate.outcomes import StepStatus
from greencpn.actuate.phases.state import RunState
from greencpn.actuate.reconcile import (
    CAP_TOLERANCE_W,
    NO_GPU_BACKEND,
    CapChange,
    JobCap,
    PoolDiff,
    _cap_changes,
    _list_gpus,
)
from greencpn.actuate.safety import Held


class CapPhases(RunState):
    """Setting GPU power caps, with rollback, and recording the caps that cannot be applied."""

    # ---------------------------------------------------------------- GPU caps
    def set_caps(
        self, phase: str, d: PoolDiff, changes: Sequence[CapChange], job: JobCap | None = None
    ) -> None:
        if not changes:
            return
        cap_w = d.target_cap_w if job is None else job.cap_w
        detail: dict[str, object] = {
            "target_w": cap_w,
            "before_w": {c.target: c.before_w for c in changes},
        }
        if job is not None:
            detail["job"] = job.job_id
        sid = self.ledger.intent(
            self.apply_id,
            self.now(),
            phase=phase,
            action="set_power_cap",
            pool=d.name,
            targets=[c.target for c in changes],
            detail=detail,
        )
        write = self._write_cap if job is None else self._write_cap_read_back
        done: list[CapChange] = []
        for c in changes:
            outcome = self.execute(partial(write, c, c.after_w), f"{phase} {c.target}")
            if outcome.exception is not None:
                self._cap_failure(phase, d, sid, done, c, outcome.error, job)
                return
            done.append(c)
        self.ledger.result(
            sid, self.now(), StepStatus.OK, {"set_w": {c.target: c.after_w for c in done}}
        )
        self.out(
            phase,
            "set_power_cap",
            d.name,
            [c.target for c in done],
            StepStatus.OK,
            f"{len(done)} GPU(s) to {cap_w:g} W"
            + ("" if job is None else f" (job {job.job_id}'s own cap)"),
        )

    def _write_cap(self, c: CapChange, power_limit_w: float) -> object:
        gb = self.backends.gpus(c.node)
        if gb is None:
            raise RuntimeError(f"no GPU backend for {c.node}")
        return gb.set_power_limit_w(c.index, power_limit_w)

    def _write_cap_read_back(self, c: CapChange, power_limit_w: float) -> object:
        """Write, then read the GPU's limit back: a limit that did not take is an error."""
        change = self._write_cap(c, power_limit_w)
        gb = self.backends.gpus(c.node)
        assert gb is not None  # _write_cap raised otherwise
        read = getattr(gb, "power_limit_w", None)
        if callable(read):
            now_w = float(read(c.index))
        else:
            now_w = next(g.power_limit_current_w for g in gb.list_gpus() if g.index == c.index)
        if abs(now_w - power_limit_w) > CAP_TOLERANCE_W:
            raise RuntimeError(f"{c.target}: set to {power_limit_w:g} W but reads back {now_w:g} W")
        return change

    def _cap_failure(
        self,
        phase: str,
        d: PoolDiff,
        sid: int,
        done: list[CapChange],
        failed: CapChange,
        err: str,
        job: JobCap | None = None,
    ) -> None:
        cap_w = d.target_cap_w if job is None else job.cap_w
        rolled: list[str] = []
        rb_errors: dict[str, str] = {}
        if done:
            rb = self.ledger.intent(
                self.apply_id,
                self.now(),
                phase=phase,
                action="rollback_power_cap",
                pool=d.name,
                targets=[c.target for c in done],
                detail={"restore_w": {c.target: c.before_w for c in done}},
            )
            for c in reversed(done):
                outcome = self.execute(
                    partial(self._write_cap, c, c.before_w), f"{phase} rollback {c.target}"
                )
                if outcome.exception is None:
                    rolled.append(c.target)
                else:
                    rb_errors[c.target] = outcome.error
            self.ledger.result(
                rb,
                self.now(),
                StepStatus.ERROR if rb_errors else StepStatus.OK,
                {
                    "restored": rolled,
                    "errors": rb_errors,
                    "still_at_new_cap_w": {t: cap_w for t in rb_errors},
                },
            )
            self.out(
                phase,
                "rollback_power_cap",
                d.name,
                rolled or [c.target for c in done],
                StepStatus.ERROR if rb_errors else StepStatus.OK,
                f"restored {len(rolled)} GPU(s)"
                + (f"; could not restore {sorted(rb_errors)}" if rb_errors else ""),
            )
        self.ledger.result(
            sid,
            self.now(),
            StepStatus.ERROR,
            {
                "error": err,
                "failed_at": failed.target,
                "set_then_rolled_back": rolled,
                "rollback_errors": rb_errors,
            },
        )
        self.out(
            phase,
            "set_power_cap",
            d.name,
            [failed.target],
            StepStatus.ERROR,
            f"{err}; "
            + (f"pool {d.name}" if job is None else f"job {job.job_id}'s")
            + f" caps left as before; power-raising steps at site {d.site} skipped",
        )
        self.failed_sites.add(d.site)

    def lower_caps_phase(self) -> None:
        for d in self.diffs:
            self.set_caps("lower_caps", d, d.cap_lower)
            for job in d.job_caps:
                self.set_caps("lower_caps", d, job.lower, job)
            self._caps_not_applied("lower_caps", d, d.cap_unreached, d.cap_out_of_range)
            self._job_caps_not_applied("lower_caps", d)

    def raise_caps_phase(self) -> None:
        for d in self.diffs:
            for job in d.job_caps:
                self._raise_job_caps(d, job)
            if d.target_cap_w is None:
                continue
            booted = [
                n
                for n, (p, _) in self.booting.items()
                if p is d and self.ledger.node(n).power == "on"
            ]
            changes = list(d.cap_raise)
            not_read: list[Held] = []
            oor: list[Held] = []
            for n in booted:  # fresh nodes come up at their default cap: read, then set
                gb = self.backends.gpus(n)
                gpus = _list_gpus(gb, n, d.notes) if gb is not None else None
                if gb is None:
                    not_read.append(Held(n, NO_GPU_BACKEND))
                elif gpus is None:
                    not_read.append(Held(n, d.notes[-1].removeprefix(f"{n}: ")))
                else:
                    lower, raise_, more = _cap_changes(d.target_cap_w, n, gpus, d.notes)
                    changes += lower + raise_
                    oor += more
            self._caps_not_applied("raise_caps", d, not_read, oor)
            if not changes:
                continue
            if d.site in self.failed_sites and any(c.after_w > c.before_w for c in changes):
                ups = [c for c in changes if c.after_w > c.before_w]
                self.decide(
                    "raise_caps",
                    "set_power_cap",
                    d.name,
                    [c.target for c in ups],
                    StepStatus.SKIPPED,
                    f"a power-reducing step failed at site {d.site}",
                )
                changes = [c for c in changes if c.after_w <= c.before_w]
            self.set_caps("raise_caps", d, changes)

    def _raise_job_caps(self, d: PoolDiff, job: JobCap) -> None:
        if not job.raise_:
            return
        if d.site in self.failed_sites:  # a job's raises go together or not at all
            self.decide(
                "raise_caps",
                "set_power_cap",
                d.name,
                [c.target for c in job.raise_],
                StepStatus.SKIPPED,
                f"job {job.job_id}: a power-reducing step failed at site {d.site}",
            )
            return
        self.set_caps("raise_caps", d, job.raise_, job)

    def _job_caps_not_applied(self, phase: str, d: PoolDiff) -> None:
        """Record the jobs whose own cap is not applied (their GPUs keep the pool's cap)."""
        for h in d.job_caps_held:
            self.decide(phase, "set_power_cap", d.name, [h.node], StepStatus.SKIPPED, h.reason)
        self.report.job_caps_not_applied += [h.node for h in d.job_caps_held]

    def _caps_not_applied(
        self, phase: str, d: PoolDiff, not_read: list[Held], out_of_range: list[Held]
    ) -> None:
        """Record the caps the plan asks for that cannot be applied (a reported outcome)."""
        status = StepStatus.SKIPPED
        if not_read:
            self.decide(
                phase,
                "set_power_cap",
                d.name,
                [h.node for h in not_read],
                status,
                "caps not read or set: " + "; ".join(f"{h.node}: {h.reason}" for h in not_read),
            )
        if out_of_range:
            reasons = sorted({h.reason for h in out_of_range})
            self.decide(
                phase,
                "set_power_cap",
                d.name,
                [h.node for h in out_of_range],
                status,
                "caps not applied: " + "; ".join(reasons) + "; left as they are",
            )
        self.report.caps_not_applied += [h.node for h in out_of_range]
        self.report.caps_not_read += [h.node for h in not_read]
