"""Refit GPU profiles from the fleet's own job measurements (issue #14.4).

Input: :class:`~greencpn.actuate.gpu.meter.JobMeasurement` records (one finished job: GPU model,
workload class, cap, duration, board energy, work). A *workload* (a recurring job: same name or
script) measured at several caps plays the role of a Zeus configuration: its seconds per unit
of work and its average power per GPU at each cap (median over its runs at that cap) go through
the same fit as the sweeps (:func:`greencpn.gpumodels.fit.fit_levels`), per GPU model and per
workload class. A workload must have run at least once at the device's maximum limit (the
normalisation: its speed and energy relative to uncapped); others are left out and counted.

The refit profile keeps the device facts of the profile it replaces (limits, idle, aliases),
takes the measured caps as levels, is marked ``extrapolated = false`` and says in ``source``
how many jobs and workloads it comes from.

``per_workload=True`` (``--per-workload``) also writes each recurring workload measured at
the maximum limit and at least :data:`MIN_WORKLOAD_CAPS` caps as a workload class of its own,
named after the workload (:func:`workload_key`): its own measured curve (the same fit on its
runs alone; caps it never ran at are interpolated between its measured ones, flat beyond).
A job of that workload names it as its ``workload_class`` and the plan (and
``cap_mode = "job"``) then uses its own curve instead of its class's median (issue #14.3).
A workload whose key is already taken (a class's name, or another workload's key) gets no
curve of its own (it is named in ``notes``).

Each level of a workload's own curve also carries ``throughput_low``, a one-sided lower
confidence bound (``confidence``, default :data:`DEFAULT_CONFIDENCE`) of its throughput from
the spread of its metered runs (:func:`throughput_bounds`): the chooser of ``cap_mode = "job"``
takes a cap only if the job meets its deadline at that bound (``solver.job_cap_slowdown``).
Run-to-run noise makes a cap whose real slowdown is just past the limit look just inside it on
a few runs; the bound needs more, or cleaner, runs before it certifies such a cap.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import defaultdict
from dataclasses import dataclass, replace

from greencpn.actuate.gpu.meter import JobMeasurement
from greencpn.config import GpuModelConfig
from greencpn.gpumodels.fit import (
    ClassLevels,
    Points,
    curve_levels,
    fit_levels,
    render_toml,
)

#: a workload gets its own curve only when measured at this many caps (the top one included)
MIN_WORKLOAD_CAPS = 2
#: one-sided confidence of the throughput_low bounds of the workloads' own curves
DEFAULT_CONFIDENCE = 0.9
#: standard deviation of a median of normal samples ÷ that of their mean, asymptotically
#: (√(π/2); for 3 runs the exact ratio is 1.16, so this errs on the safe side)
MEDIAN_SE_FACTOR = math.sqrt(math.pi / 2.0)


def t_quantile(q: float, df: int) -> float:
    """The ``q`` quantile (0.5 < q < 1) of Student's t with ``df`` degrees of freedom
    (``scipy.stats.t.ppf``; t(0.95, 2) = 2.920, t(0.95, 10) = 1.812)."""
    if not 0.5 < q < 1.0 or df < 1:
        raise ValueError(f"need 0.5 < q < 1 and df >= 1 (got q={q}, df={df})")
    from scipy.stats import t  # lazy: scipy.stats costs ~0.3 s to import, only a refit needs it

    return float(t.ppf(q, df))


def _log_spread(runs: dict[float, list[float]]) -> tuple[float, int]:
    """(pooled standard deviation of log seconds-per-work within each cap, degrees of
    freedom Σ (n_cap − 1)) of one workload's runs (``runs``: cap → seconds per work)."""
    ss, df = 0.0, 0
    for xs in runs.values():
        if len(xs) < 2:
            continue
        logs = [math.log(x) for x in xs]
        m = statistics.fmean(logs)
        ss += sum((v - m) ** 2 for v in logs)
        df += len(logs) - 1
    return (math.sqrt(ss / df) if df else 0.0), df


def throughput_bounds(
    runs: dict[float, list[float]],
    caps: list[float],
    curve: list[float],
    top: float,
    confidence: float = DEFAULT_CONFIDENCE,
    spread: tuple[float, int] | None = None,
) -> list[float] | None:
    """A one-sided ``confidence`` lower bound of one workload's throughput at each of ``caps``
    (``curve``: its fitted throughputs there, ascending caps; ``runs``: cap → the seconds per
    unit of work of each of its runs).

    At a cap it ran at: ``min(curve, θ_raw × exp(−t × se))`` with ``θ_raw`` = median seconds
    per work at ``top`` ÷ that at the cap (the cap's own runs: not the isotonic curve, which
    may borrow a faster lower cap's speed), ``se = √(π/2) × s × √(1/n_cap + 1/n_top)`` (the
    standard error of a log ratio of two medians), ``s`` the pooled within-cap spread of the
    log run times (``spread``: a fallback (s, df) when the workload has no repeated cap) and
    ``t`` Student's quantile with its degrees of freedom. At a cap it never ran at: the bound of
    the nearest cap below that it ran at (the curve is taken to be monotone), 0 if none — it is
    never certified. None when there is no spread estimate at all (every cap run once and no
    fallback)."""
    s, df = _log_spread(runs)
    if df == 0 and spread is not None:
        s, df = spread
    if df == 0:
        return None
    t = t_quantile(confidence, df)
    n_top = len(runs[top])
    med_top = statistics.median(runs[top])
    out: list[float] = []
    below = 0.0
    for cap, thr in zip(caps, curve, strict=True):
        if cap in runs:
            if cap == top:
                lo = thr
            else:
                raw = med_top / statistics.median(runs[cap])
                se = MEDIAN_SE_FACTOR * s * math.sqrt(1.0 / len(runs[cap]) + 1.0 / n_top)
                lo = min(thr, raw * math.exp(-t * se))
            below = lo
        else:
            lo = min(thr, below)
        out.append(max(0.0, min(1.0, lo)))
    return out


def workload_key(workload: str) -> str:
    """The workload-class name of a recurring workload's own curve: its name with every
    character outside ``A-Za-z0-9_-`` replaced by ``-`` (the class-name pattern)."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", workload) or "-"


@dataclass
class LedgerFit:
    model: GpuModelConfig
    toml: str
    jobs: int
    workloads: int
    skipped_workloads: list[str]  # never measured at the maximum limit
    classes: dict[str, int]  # class → workloads
    workload_curves: list[str] | None = None  # per_workload: the workloads' own class names


def _points(ms: list[JobMeasurement]) -> dict[str, dict[float, tuple[float, float]]]:
    by: dict[str, dict[float, list[JobMeasurement]]] = defaultdict(lambda: defaultdict(list))
    for m in ms:
        by[m.workload][m.power_cap_w].append(m)
    return {
        w: {
            cap: (
                statistics.median(x.seconds_per_work for x in runs),
                statistics.median(x.power_w for x in runs),
            )
            for cap, runs in caps.items()
        }
        for w, caps in by.items()
    }


def _runs(ms: list[JobMeasurement]) -> dict[str, dict[float, list[float]]]:
    """Per workload and cap: the seconds per unit of work of each run."""
    by: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for m in ms:
        by[m.workload][m.power_cap_w].append(m.seconds_per_work)
    return {w: dict(c) for w, c in by.items()}


def refit(
    measurements: list[JobMeasurement],
    models: dict[str, GpuModelConfig],
    *,
    per_workload: bool = False,
    confidence: float = DEFAULT_CONFIDENCE,
) -> dict[str, LedgerFit]:
    """One refit profile per GPU model named in the measurements (``models``: name/alias →
    profile); ``per_workload``: each recurring workload's own curve as a class too, its levels
    with ``throughput_low`` at ``confidence`` (:func:`throughput_bounds`)."""
    if not 0.5 < confidence < 1.0:
        raise ValueError(
            f"confidence={confidence}: use a number between 0.5 and 1 (e.g. 0.95), the "
            "one-sided confidence of the throughput_low bounds"
        )
    by_model: dict[str, list[JobMeasurement]] = defaultdict(list)
    unknown = sorted({m.gpu_model for m in measurements if m.gpu_model.lower() not in models})
    if unknown:
        raise ValueError(
            f"measurements name GPU model(s) {unknown} without a profile; add one under "
            "models/gpus/ (its limits and idle power are kept) and refit"
        )
    for m in measurements:
        by_model[models[m.gpu_model.lower()].name].append(m)
    out: dict[str, LedgerFit] = {}
    for name, ms in sorted(by_model.items()):
        base = models[name.lower()]
        top = base.power_limit_max_w
        pts = _points(ms)
        usable = {w: p for w, p in pts.items() if top in p}
        skipped = sorted(set(pts) - set(usable))
        if not usable:
            raise ValueError(
                f"{name}: no workload was measured at the maximum limit {top:g} W; run each "
                "recurring job uncapped at least once so its speed and energy can be normalised"
            )
        all_fit = fit_levels(list(usable.values()), top)
        caps = all_fit.limits
        cls_of: dict[str, str | None] = {}
        for m in ms:
            cls_of.setdefault(m.workload, m.workload_class)
        classes: dict[str, list[Points]] = defaultdict(list)
        for w, p in usable.items():
            c = cls_of[w]
            if c:
                classes[c].append(p)
        class_levels = [
            ClassLevels(c, len(cfgs), False, curve_levels(fit_levels(cfgs, top), caps, top))
            for c, cfgs in sorted(classes.items())
        ]
        own, clash, below_idle = (
            _workload_classes(
                usable, caps, base, {c.name for c in class_levels}, _runs(ms), confidence
            )
            if per_workload
            else ([], [], [])
        )
        levels = curve_levels(all_fit, caps, top)
        source = (
            f"Measured by greencpn on this fleet (greencpn models fit --from-ledger): {len(ms)} "
            f"jobs of {len(usable)} recurring workloads at {len(caps)} caps "
            f"({', '.join(f'{c:g}' for c in caps)} W), fitted like the Zeus sweeps (median "
            "throughput and median energy per unit of work relative to the maximum limit). "
            f"Device facts from the profile it replaces: {base.source[:120]}"
        )
        notes = (
            "Refit from NVML total-energy counters and job durations; rerun as the fleet "
            "measures more jobs. "
            + (f"Left out (never run uncapped): {skipped}. " if skipped else "")
            + (
                f"{len(own)} recurring workloads have their own curve as a workload class "
                "(--per-workload), throughput_low = one-sided lower bound of throughput at "
                f"{confidence:g} confidence from the spread of the runs. "
                if per_workload
                else ""
            )
            + (
                f"No own curve (its key is taken by a class or another workload): {clash}. "
                if clash
                else ""
            )
            + (
                f"No own curve (draws less than idle_w {base.idle_w:g} W at some cap: measure "
                f"the idle power of this GPU and correct idle_w): {below_idle}. "
                if below_idle
                else ""
            )
        )
        text = render_toml(
            base, levels, class_levels + own, False, source, notes, known_classes=False
        )
        out[name] = LedgerFit(
            GpuModelConfig.model_validate(_toml_loads(text)),
            text,
            len(ms),
            len(usable),
            skipped,
            {c.name: c.configs for c in class_levels},
            [c.name for c in own] if per_workload else None,
        )
    return out


def _workload_classes(
    usable: dict[str, dict[float, tuple[float, float]]],
    caps: list[float],
    base: GpuModelConfig,
    taken: set[str],
    runs: dict[str, dict[float, list[float]]],
    confidence: float = DEFAULT_CONFIDENCE,
) -> tuple[list[ClassLevels], list[str], list[str]]:
    """(each workload's own curve as a class, workloads left out because their key is taken,
    workloads left out because they draw less than the profile's idle power at some cap — a
    profile cannot say so, and their busy power above idle would be negative)."""
    top = base.power_limit_max_w
    out: list[ClassLevels] = []
    clash: list[str] = []
    below_idle: list[str] = []
    # the fallback spread for a workload without a repeated cap: all workloads' runs pooled
    ss, dfs = 0.0, 0
    for w in usable:
        s_w, df_w = _log_spread(runs[w])
        ss += s_w**2 * df_w
        dfs += df_w
    pooled = (math.sqrt(ss / dfs), dfs) if dfs else None
    for w, pts in sorted(usable.items()):
        if len(pts) < MIN_WORKLOAD_CAPS:
            continue
        key = workload_key(w)
        if key in taken:
            clash.append(w)
            continue
        levels = curve_levels(fit_levels([pts], top), caps, top)
        if any(lv.power_factor * top < base.idle_w for lv in levels):
            below_idle.append(w)
            continue
        lows = throughput_bounds(
            runs[w], caps, [lv.throughput for lv in levels], top, confidence, pooled
        )
        if lows is not None:
            levels = [replace(lv, throughput_low=lo) for lv, lo in zip(levels, lows, strict=True)]
        taken.add(key)
        out.append(ClassLevels(key, 1, False, levels))
    return out, clash, below_idle


def _toml_loads(text: str) -> dict:
    import tomllib

    return tomllib.loads(text)
