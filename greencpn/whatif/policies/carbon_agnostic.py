"""carbon-agnostic: every job starts at release where it was submitted; all nodes on, full power."""

from __future__ import annotations

from greencpn.whatif.model import Decision, FleetSpec, View
from greencpn.whatif.policies.base import all_on, place_fifo


class CarbonAgnostic:
    name = "carbon-agnostic"

    def reset(self, fleet: FleetSpec) -> None:
        pass

    def decide(self, view: View) -> Decision:
        d = Decision()
        all_on(view, d)
        place_fifo(view, sorted(view.waiting, key=lambda j: (j.release, j.id)), d)
        return d


POLICY = CarbonAgnostic
