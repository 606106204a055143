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


def replay(
    active: np.ndarray,
    total: np.ndarray | int,
    *,
    spares: Callable[[int], int],
    boot_min: int = 10,
    idle_power: float = 0.3,
    boot_power: float = 0.3,
) -> NodeDemandResult:
    """Replay the rule minute by minute (see the module docstring); ``total`` may vary."""
    tot = np.broadcast_to(np.asarray(total, dtype=int), active.shape)
    up = min(int(tot[0]), int(active[0]) + spares(int(active[0])))
    booting: deque[tuple[int, int]] = deque()  # (ready minute, nodes)
    n_booting = 0
    energy = 0.0
    wait = 0
    boots = 0
    for t, (a, total_t) in enumerate(zip(active.tolist(), tot.tolist(), strict=True)):
        while booting and booting[0][0] <= t:
            up += booting.popleft()[1]
        n_booting = sum(k for _, k in booting)
        want = min(total_t, a + spares(a))
        up = min(up, total_t)  # nodes leaving the cluster (its size changes in some traces)
        if up + n_booting < want:
            k = want - up - n_booting
            booting.append((t + boot_min, k))
            boots += k
            n_booting += k
        elif up > want:
            up = max(want, a)  # only idle nodes go off
        if a > up:
            wait += 1
        busy = min(a, up)
        energy += busy + idle_power * (up - busy) + boot_power * n_booting
    base = float(np.sum(active) + idle_power * np.sum(tot - active))
    return NodeDemandResult(
        minutes=len(active),
        energy_saved_pct=100.0 * (base - energy) / base,
        idle_share_of_baseline_energy_pct=100.0 * idle_power * float(np.sum(tot - active)) / base,
        waiting_minutes_pct=100.0 * wait / len(active),
        boots=boots,
        boots_per_node=boots / float(np.max(tot)),
    )
