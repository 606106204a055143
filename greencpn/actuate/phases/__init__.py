"""The phases of one apply, in the order :meth:`Run.run` carries them out.

=====  ================  ===================================================
step   module            what
=====  ================  ===================================================
0      :mod:`.observe`   record the observed state; mark overdue boots failed
1      :mod:`.caps`      lower caps (power goes down first)
2–3    :mod:`.power`     drain, wait idle (one deadline), power off
4      :mod:`.power`     power on
5–6    :mod:`.boot`      wait for boot, resume the nodes greencpn drained
7      :mod:`.caps`      raise caps, set caps on freshly booted nodes
=====  ================  ===================================================

The shared state is :class:`~.state.RunState` (on :class:`~greencpn.actuate.journal.Journal`,
through which every step is written). :meth:`Run.shadow` records what would be done instead.
"""

from __future__ import annotations

from greencpn.actuate.outcomes import StepStatus
from greencpn.actuate.phases.boot import BootPhases
from greencpn.actuate.phases.caps import CapPhases
from greencpn.actuate.phases.observe import ObservePhase
from greencpn.actuate.phases.power import PowerPhases
from greencpn.actuate.phases.state import TOKEN_KEY, RunState
from greencpn.actuate.safety import WORK_UNKNOWN

__all__ = ["TOKEN_KEY", "Run", "RunState"]


class Run(ObservePhase, CapPhases, PowerPhases, BootPhases):
    """One apply in ``act`` (:meth:`run`) or ``shadow`` (:meth:`shadow`) mode."""

    def run(self) -> None:
        self.record_observations()
        self.lower_caps_phase()
        self.power_off_phase()
        self.power_on_phase()
        self.wait_boot_phase()
        self.resume_phase()
        self.raise_caps_phase()
        self.ledger.set_kv(TOKEN_KEY, self.bucket.state())

    def shadow(self) -> None:
        """Record what would be done, change nothing."""
        for d in self.diffs:
            for phase, action, targets in (
                ("lower_caps", "set_power_cap", [c.target for c in d.cap_lower]),
                ("power_off", "power_off", d.power_off),
                ("power_on", "power_on", d.power_on),
                ("resume", "resume", d.resume),
                ("raise_caps", "set_power_cap", [c.target for c in d.cap_raise]),
                ("observe", "mark_failed", [h.node for h in d.mark_failed]),
            ):
                if targets:
                    self.decide(
                        phase, action, d.name, targets, StepStatus.SHADOW, "would do (shadow mode)"
                    )
            for job in d.job_caps:
                for phase, changes in (("lower_caps", job.lower), ("raise_caps", job.raise_)):
                    if changes:
                        self.decide(
                            phase,
                            "set_power_cap",
                            d.name,
                            [c.target for c in changes],
                            StepStatus.SHADOW,
                            f"would set job {job.job_id}'s own cap {job.cap_w:g} W (shadow mode)",
                        )
            if d.work_unknown:
                self.decide(
                    "drain", "power_off", d.name, d.work_unknown, StepStatus.SKIPPED, WORK_UNKNOWN
                )
            self._caps_not_applied("lower_caps", d, d.cap_unreached, d.cap_out_of_range)
            self._job_caps_not_applied("lower_caps", d)
