"""The state one apply's phases share (the fleet's diff, settings, rate limit, nodes booting)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from greencpn.actuate.journal import Journal
from greencpn.actuate.ledger import Ledger
from greencpn.actuate.reconcile import Backends, PoolDiff
from greencpn.actuate.report import ApplyReport
from greencpn.actuate.safety import ControlSettings, TokenBucket
from greencpn.clock import Clock

TOKEN_KEY = "power_ops_bucket"
"""Ledger key of the power-operation rate limiter's state (kept between applies)."""


class RunState(Journal):
    """One apply in ``act`` or ``shadow`` mode (state for the phases)."""

    def __init__(
        self,
        diffs: list[PoolDiff],
        report: ApplyReport,
        backends: Backends,
        ledger: Ledger,
        settings: ControlSettings,
        clock: Clock,
        sleep: Callable[[float], None],
        apply_id: int,
    ) -> None:
        super().__init__(
            report,
            backends,
            ledger,
            clock,
            apply_id,
            sleep=sleep,
            retry_budget_s=settings.retry_budget_s,
        )
        self.diffs = diffs
        self.settings = settings
        self.failed_sites: set[str] = set()
        self.bucket = TokenBucket.from_state(
            ledger.get_kv(TOKEN_KEY),
            settings.max_power_ops_per_min,
            settings.power_ops_burst,
            clock,
        )
        self.booting: dict[str, tuple[PoolDiff, datetime]] = {}  # node -> pool, deadline
        self.powered_off: set[str] = set()
