"""Idle-node shutdown replayed on a per-minute series of busy nodes (e.g. Philly's
``philly_node_sequence_per_minute.csv``: ``time,active,total``).

Each minute the rule wants ``active + spares(active)`` nodes powered (at most ``total``). Nodes
above that are powered off at once if idle; missing ones are booted and become usable after
``boot_min`` minutes. A minute in which fewer nodes are up than are busy in the trace is a
minute where demand waits. Energy per node-minute, relative to a busy node: busy 1, idle
``idle_power``, booting ``boot_power``, off 0. The baseline keeps all ``total`` nodes up.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from greencpn.errors import ConfigError


@dataclass(frozen=True)
class NodeDemandResult:
    minutes: int
    energy_saved_pct: float  # (baseline - rule) / baseline energy
    idle_share_of_baseline_energy_pct: float  # the most any rule could save
    waiting_minutes_pct: float  # minutes with busy nodes > powered nodes, / all minutes
    boots: int  # nodes booted over the series
    boots_per_node: float  # boots / total nodes


def read_node_sequence(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """(busy nodes, total nodes) per minute of a ``time,active,total`` CSV.

    Raises:
        ConfigError: missing columns or non-numeric values (file and line named).
    """
    path = Path(path)
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise ConfigError(
            "node sequence not found", source=str(path), fix="check the path"
        ) from None
    if not {"active", "total"} <= set(df.columns):
        raise ConfigError(
            f"expected columns time,active,total; found {list(df.columns)}",
            source=f"{path}:1",
            fix="give the per-minute node sequence (time,active,total)",
        )
    for col in ("active", "total"):
        vals = pd.to_numeric(df[col], errors="coerce")
        bad = np.flatnonzero(vals.isna().to_numpy())
        if len(bad):
            raise ConfigError(
                f"non-numeric {col} {df[col].iloc[bad[0]]!r}",
                source=f"{path}:{int(bad[0]) + 2}",
                field=col,
                fix="write a whole number of nodes",
            )
    return df["active"].to_numpy(dtype=int), df["total"].to_numpy(dtype=int)


def spares_rule(min_spares: int = 2, fraction: float = 0.10) -> Callable[[int], int]:
    """``max(min_spares, ceil(fraction × active))`` spare nodes."""
    return lambda active: max(min_spares, math.ceil(fraction * active))


class PeakForecastRule:
    """Load-forecast rule: keep up the forecast peak of busy nodes over the next boot time.

    The forecast of the peak over ``[t, t + boot_min]`` is the highest busy count of the last
    ``window_min`` minutes (the recent peak, which also keeps just-freed nodes up for a while
    instead of cycling them). Its margin is the ``quantile`` of this forecast's own measured
    error — ``max(busy[s..s+boot_min]) − forecast(s)`` for the minutes ``s`` whose boot window
    has already closed — over the last ``history_days``, refreshed every ``refit_min`` minutes.
    Until ``warmup_min`` minutes are seen the margin is ``warmup_spares``.

    Surge (``surge_spares`` > 0, off by default): a minute whose busy count exceeds what the
    rule asked for the minute before is a shortfall the rule sees itself (its own last
    answer); for ``surge_hold_min`` minutes after the latest shortfall it keeps
    ``surge_spares`` more nodes up. Philly's longest waits are sustained ramps, during which
    the recent peak + a fixed margin stays one boot behind.

    No look-ahead by construction: the rule is fed one minute at a time (:meth:`want` gets the
    busy count of minute ``t`` only) and keeps its own history.
    """

    def __init__(
        self,
        *,
        boot_min: int = 10,
        window_min: int = 60,
        quantile: float = 0.992,
        history_days: float = 28.0,
        refit_min: int = 60,
        warmup_min: int = 1440,
        warmup_spares: int = 10,
        surge_spares: int = 0,
        surge_hold_min: int = 45,
    ) -> None:
        if not 0.0 < quantile < 1.0:
            raise ConfigError(
                f"quantile {quantile} is not in (0, 1)", field="quantile", fix="use e.g. 0.99"
            )
        for name, v in (("surge_spares", surge_spares), ("surge_hold_min", surge_hold_min)):
            if int(v) != v or v < 0:
                raise ConfigError(
                    f"{name} {v!r} is not a whole number ≥ 0",
                    field=name,
                    fix="use e.g. surge_spares = 40, surge_hold_min = 45 (0 spares: no surge)",
                )
        self.surge_spares, self.surge_hold_min = int(surge_spares), int(surge_hold_min)
        self._last_want: int | None = None
        self._last_shortfall = -(10**9)
        self.boot_min, self.window_min, self.quantile = boot_min, window_min, quantile
        self.history = int(history_days * 1440)
        self.refit_min, self.warmup_min, self.warmup_spares = refit_min, warmup_min, warmup_spares
        self._seen: list[int] = []
        self._forecast: list[int] = []  # recent peak at each minute
        self._errors = np.zeros(1024)  # error of forecast(s), s = 0 .. t - boot_min
        self._n_errors = 0
        self._peak: deque[int] = deque()  # minutes, decreasing busy: recent peak (window_min)
        self._fwd: deque[int] = deque()  # the same over the last boot_min + 1 minutes
        self._margin = float(warmup_spares)
        self.margins: list[float] = []  # margin in force at each refit (for reports)

    @staticmethod
    def _push(dq: deque[int], seen: list[int], t: int, width: int) -> int:
        a = seen[t]
        while dq and seen[dq[-1]] <= a:
            dq.pop()
        dq.append(t)
        while dq[0] < t - width:
            dq.popleft()
        return seen[dq[0]]

    def want(self, busy: int) -> int:
        """Nodes to keep powered at the next minute, given this minute's busy count."""
        t = len(self._seen)
        self._seen.append(int(busy))
        peak = self._push(self._peak, self._seen, t, self.window_min)
        self._forecast.append(peak)
        fwd = self._push(self._fwd, self._seen, t, self.boot_min)
        s = t - self.boot_min
        if s >= 0:  # the window of minute s closed now: its forecast's error is known
            if self._n_errors == len(self._errors):
                self._errors = np.concatenate([self._errors, np.zeros(len(self._errors))])
            self._errors[self._n_errors] = fwd - self._forecast[s]
            self._n_errors += 1
        if t >= self.warmup_min and t % self.refit_min == 0 and self._n_errors:
            n = self._n_errors
            recent = self._errors[max(0, n - self.history) : n]
            self._margin = max(0.0, float(np.quantile(recent, self.quantile)))
            self.margins.append(self._margin)
        out = peak + math.ceil(self._margin)
        if self.surge_spares:
            if self._last_want is not None and busy > self._last_want:
                self._last_shortfall = t
            if t - self._last_shortfall <= self.surge_hold_min:
                out += self.surge_spares
        self._last_want = out
        return out


def replay_forecast(
    active: np.ndarray,
    total: np.ndarray | int,
    rule: PeakForecastRule,
    *,
    boot_min: int = 10,
    idle_power: float = 0.3,
    boot_power: float = 0.3,
    accounted: slice | None = None,
) -> NodeDemandResult:
    """:func:`replay` with a load-forecast ``rule`` fed one minute at a time."""
    return replay(
        active,
        total,
        want=lambda _t, a: rule.want(a),
        boot_min=boot_min,
        idle_power=idle_power,
        boot_power=boot_power,
        accounted=accounted,
    )


def replay(
    active: np.ndarray,
    total: np.ndarray | int,
    *,
    spares: Callable[[int], int] | None = None,
    want: Callable[[int, int], int] | None = None,
    boot_min: int = 10,
    idle_power: float = 0.3,
    boot_power: float = 0.3,
    accounted: slice | None = None,
) -> NodeDemandResult:
    """Replay the rule minute by minute (see the module docstring); ``total`` may vary.

    The rule is either ``spares(active)`` (nodes kept up = active + spares) or
    ``want(minute, active)`` (nodes kept up; called once per minute, in order).
    ``accounted``: the minutes the figures cover (e.g. a held-out half); the rule is still fed
    every minute from the first, so it has its history.
    """
    if (spares is None) == (want is None):
        raise ValueError("give exactly one of spares= or want=")
    if want is None:
        assert spares is not None
        sp = spares

        def want(_t: int, a: int) -> int:
            return a + sp(a)

    tot = np.broadcast_to(np.asarray(total, dtype=int), active.shape)
    up = -1  # set at the first minute to what the rule wants
    booting: deque[tuple[int, int]] = deque()  # (ready minute, nodes)
    n_booting = 0
    acc = np.zeros(len(active), dtype=bool)
    acc[accounted if accounted is not None else slice(None)] = True
    energy = 0.0
    wait = 0
    boots = 0
    for t, (a, total_t) in enumerate(zip(active.tolist(), tot.tolist(), strict=True)):
        while booting and booting[0][0] <= t:
            up += booting.popleft()[1]
        n_booting = sum(k for _, k in booting)
        wanted = min(total_t, want(t, a))
        if up < 0:
            up = wanted
        up = min(up, total_t)  # nodes leaving the cluster (its size changes in some traces)
        if up + n_booting < wanted:
            k = wanted - up - n_booting
            booting.append((t + boot_min, k))
            boots += k if acc[t] else 0
            n_booting += k
        elif up > wanted:
            up = max(wanted, a)  # only idle nodes go off
        if not acc[t]:
            continue
        if a > up:
            wait += 1
        busy = min(a, up)
        energy += busy + idle_power * (up - busy) + boot_power * n_booting
    act, idle = active[acc], (tot - active)[acc]
    base = float(np.sum(act) + idle_power * np.sum(idle))
    n = int(acc.sum())
    return NodeDemandResult(
        minutes=n,
        energy_saved_pct=100.0 * (base - energy) / base,
        idle_share_of_baseline_energy_pct=100.0 * idle_power * float(np.sum(idle)) / base,
        waiting_minutes_pct=100.0 * wait / n,
        boots=boots,
        boots_per_node=boots / float(np.max(tot)),
    )
