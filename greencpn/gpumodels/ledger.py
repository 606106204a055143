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
"""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from dataclasses import dataclass

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


def refit(
    measurements: list[JobMeasurement],
    models: dict[str, GpuModelConfig],
    *,
    per_workload: bool = False,
) -> dict[str, LedgerFit]:
    """One refit profile per GPU model named in the measurements (``models``: name/alias →
    profile); ``per_workload``: each recurring workload's own curve as a class too."""
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
            _workload_classes(usable, caps, base, {c.name for c in class_levels})
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
                "(--per-workload). "
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
) -> tuple[list[ClassLevels], list[str], list[str]]:
    """(each workload's own curve as a class, workloads left out because their key is taken,
    workloads left out because they draw less than the profile's idle power at some cap — a
    profile cannot say so, and their busy power above idle would be negative)."""
    top = base.power_limit_max_w
    out: list[ClassLevels] = []
    clash: list[str] = []
    below_idle: list[str] = []
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
        taken.add(key)
        out.append(ClassLevels(key, 1, False, levels))
    return out, clash, below_idle


def _toml_loads(text: str) -> dict:
    import tomllib

    return tomllib.loads(text)
