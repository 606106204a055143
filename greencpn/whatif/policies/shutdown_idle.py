"""shutdown-idle: carbon-agnostic placement, Slurm power-save style node management.

Nodes idle for ``timeout_min`` are powered off (``SuspendTime``), keeping ``spares`` idle nodes
on; nodes are woken when jobs wait for GPUs (``ResumeProgram``), and are usable after their boot
delay (``boot_time_min`` of the pool).
"""

from __future__ import annotations

from greencpn.whatif.model import Decision, FleetSpec, View
from greencpn.whatif.policies.base import idle_shutdown, place_fifo, unmet_by_home


class ShutdownIdle:
    name = "shutdown-idle"

    def __init__(self, timeout_min: float = 30.0, spares: int = 0) -> None:
        self.timeout_min = float(timeout_min)
        self.spares = int(spares)

    def reset(self, fleet: FleetSpec) -> None:
        pass

    def decide(self, view: View) -> Decision:
        d = Decision()
        left = place_fifo(view, sorted(view.waiting, key=lambda j: (j.release, j.id)), d)
        idle_shutdown(
            view, d, unmet_by_home(view, left), timeout_min=self.timeout_min, spares=self.spares
        )
        return d


POLICY = ShutdownIdle
