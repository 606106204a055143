"""How much of the per-configuration cap saving a cap policy keeps (issue #14.3).

For each configuration ``c`` (a real job: its own speed and power at each cap) the *limit* is
the largest energy-per-unit-of-work saving ``1 − E_c(p) / E_c(top)`` over the caps ``p`` that
keep it within ``slowdown`` (3 %) of its uncapped speed — what a per-job cap chosen with
perfect knowledge of that job gets. A policy assigns each configuration one cap *from what the
planner knows* (a fitted curve, not the configuration's own numbers); it keeps
``Σ_c saving_c(cap) / Σ_c limit_c``. A policy's cap may slow a configuration by more than the
allowed slowdown (the curve was wrong for it): those are counted, and a second share counts
their saving as 0 (a tight deadline would be missed).

Policies:

* ``pool``: one cap for every configuration of the GPU model — the level of the median curve
  with least energy per unit of work among those within the slowdown (what one cap per pool
  can do with the bundled profile).
* ``job``: each configuration gets the cap its workload class's curve picks the same way
  (per-job caps, class known, the configuration's own measurements unknown). Class curves are
  fitted leave-one-out: without the configuration being scored.
"""

from __future__ import annotations

from dataclasses import dataclass

from greencpn.gpumodels.fit import (
    SLOWDOWN_LIMIT,
    CurveFit,
    Points,
    classify,
    fit_levels,
)


@dataclass(frozen=True)
class ShareResult:
    policy: str
    configs: int
    limit_sum: float  # Σ per-configuration limits (saving fractions)
    kept_sum: float  # Σ savings the policy's caps give (all configurations)
    kept_within_sum: float  # the same, counting 0 for configurations slowed past the limit
    over_slowdown: int  # configurations slowed by more than the limit
    caps: dict[float, int]  # cap → configurations given it

    @property
    def share(self) -> float:
        """Σ savings / Σ per-configuration limits (configurations slowed too much included)."""
        return self.kept_sum / self.limit_sum if self.limit_sum > 0 else 1.0

    @property
    def share_within(self) -> float:
        """The same counting only configurations that stay within the slowdown."""
        return self.kept_within_sum / self.limit_sum if self.limit_sum > 0 else 1.0


def saving(c: Points, cap: float, top: float) -> float:
    return 1.0 - (c[cap][0] * c[cap][1]) / (c[top][0] * c[top][1])


def limit(c: Points, levels: list[float], top: float, slowdown: float = SLOWDOWN_LIMIT) -> float:
    """The per-configuration limit over ``levels``: best saving within ``slowdown``."""
    ok = [p for p in levels if c[top][0] / c[p][0] >= 1.0 - slowdown - 1e-12]
    return max(saving(c, p, top) for p in ok)


def pick_cap(fit: CurveFit, levels: list[float], slowdown: float = SLOWDOWN_LIMIT) -> float:
    """The level a planner picks from a curve under a tight deadline: least energy per unit of
    work among the levels whose curve throughput is within ``slowdown``."""
    ok = [p for p in levels if fit.per_limit[p].throughput >= 1.0 - slowdown - 1e-12]
    return min(ok, key=lambda p: (fit.per_limit[p].model_e_rel, -p))


def evaluate(
    configs: list[Points], levels: list[float], max_w: float, slowdown: float = SLOWDOWN_LIMIT
) -> dict[str, ShareResult]:
    """Pool and per-job (class) caps on the configurations measured at every level."""
    top = max(levels)
    cfgs = [c for c in configs if all(p in c for p in levels)]
    lim = [limit(c, levels, top, slowdown) for c in cfgs]
    out: dict[str, ShareResult] = {}
    pool_cap = pick_cap(fit_levels(cfgs, max_w), levels, slowdown)
    classes = [classify(c[top][1], max_w) for c in cfgs]
    for policy in ("pool", "job"):
        kept = kept_within = 0.0
        over = 0
        caps: dict[float, int] = {}
        for i, c in enumerate(cfgs):
            if policy == "pool":
                cap = pool_cap
            else:
                peers = [d for j, d in enumerate(cfgs) if j != i and classes[j] == classes[i]]
                cap = pick_cap(fit_levels(peers, max_w), levels, slowdown) if peers else top
            too_slow = c[top][0] / c[cap][0] < 1.0 - slowdown - 1e-12
            kept += saving(c, cap, top)
            kept_within += 0.0 if too_slow else saving(c, cap, top)
            over += too_slow
            caps[cap] = caps.get(cap, 0) + 1
        out[policy] = ShareResult(
            policy, len(cfgs), sum(lim), kept, kept_within, over, dict(sorted(caps.items()))
        )
    return out
