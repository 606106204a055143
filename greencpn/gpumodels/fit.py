"""Fit GPU power-cap profiles (``models/gpus/*.toml``) from measured power-limit sweeps.

Input: measurements of *configurations* (one DNN training set-up, or one recurring job of the
fleet), each run at several power limits: seconds per unit of work and average board power
at each limit. The Zeus NSDI'23 sweeps (``summary_power_{gpu}.csv``) are read by
:func:`read_sweep`; the fleet's own measurements by :mod:`greencpn.gpumodels.ledger`.

Method (models/README.md has the result table):

1. Per configuration, throughput at limit ``p`` = ``t(p_top) / t(p)`` and energy per unit of
   work ``E(p) / E(p_top)`` with ``E = t × P`` (``p_top`` = the highest limit, the device max).
2. Per limit: ``throughput`` θ = median over configurations of the throughput ratio, ``e_rel``
   = median of ``E(p) / E(p_top)``, and ``power_factor = θ × e_rel × pf_top`` with ``pf_top``
   = median ``P(p_top)`` ÷ ``power_limit_max_w``. So the profile's energy per unit of work
   relative to the top level, ``(power_factor / θ) / pf_top``, *is* the per-configuration median
   — the quantity a cap decision trades — while θ is the median slowdown.
3. Levels kept: the top limit, and every measured limit that is the optimum (least energy per
   unit of work, unconstrained or with ≤ 3 % slowdown) of at least 10 % of the configurations.
4. Physical limits: where ``θ × e_rel × pf_top`` exceeds ``cap / max`` (a capped GPU cannot
   draw more than its cap; the medians do not compose there), ``power_factor`` is set to
   ``cap / max`` and θ lowered so that the energy per unit of work stays the median. Then θ and
   ``power_factor`` are made non-decreasing in the cap by isotonic regression (noise: light
   configurations barely change with the cap). Every adjustment is reported (``adjusted``).
5. Workload classes: configurations are split by the share of the maximum limit they draw
   uncapped, ``P(p_top) / max`` (light < 0.5 ≤ heavy); each class is fitted the same way on
   its own configurations, at the same levels.

Profiles of GPUs without a sweep (V100-SXM2, A100, H100) are extrapolated per class: the mean
of the V100-PCIE and A40 class curves (θ and ``e_rel`` linearly interpolated at the same
fraction of the maximum), flagged ``extrapolated = true``.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: one configuration: cap W → (seconds per unit of work, average board power W)
Points = Mapping[float, tuple[float, float]]

CONFIG_KEYS = ("dataset", "network", "batch_size", "optimizer")
SLOWDOWN_LIMIT = 0.03  # "tight deadline": at most 3 % slower than uncapped
OPTIMUM_SHARE = 0.10  # a limit is kept when it is the optimum of >= 10 % of configurations
EXTRAPOLATED_FRACTIONS = (0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclass(frozen=True)
class WorkloadClass:
    name: str
    share_min: float  # uncapped board power / power_limit_max_w, inclusive
    share_max: float  # exclusive (1.0 inclusive)
    description: str


CLASSES: tuple[WorkloadClass, ...] = (
    WorkloadClass(
        "light",
        0.0,
        0.5,
        "draws < 50 % of the maximum limit uncapped (small models, input-bound, small batches: "
        "~15-40 % in the Zeus sweeps); capping costs it little speed",
    ),
    WorkloadClass(
        "heavy",
        0.5,
        1.0,
        "draws >= 50 % of the maximum limit uncapped (large models and batches, ~60-93 % in "
        "the Zeus sweeps); slows down sooner when capped",
    ),
)


def classify(uncapped_power_w: float, power_limit_max_w: float) -> str:
    """The workload class of a configuration from its uncapped board power."""
    share = uncapped_power_w / power_limit_max_w
    for c in CLASSES:
        if c.share_min <= share < c.share_max or (c.share_max >= 1.0 and share >= c.share_min):
            return c.name
    return CLASSES[-1].name


@dataclass
class LevelStat:
    cap_w: float
    throughput: float
    power_factor: float
    e_rel: float  # median over configurations of E(p)/E(p_top)
    median_power_w: float  # plain median of P(p) (for the table)
    n_configs: int
    model_e_rel: float  # the profile's own (power_factor / θ) / pf_top
    adjusted: str = ""


@dataclass
class CurveFit:
    """Every measured limit of one set of configurations, and the levels kept."""

    n_configs: int
    limits: list[float]
    pf_top: float
    per_limit: dict[float, LevelStat] = field(default_factory=dict)
    optimum_free: dict[float, int] = field(default_factory=dict)
    optimum_tight: dict[float, int] = field(default_factory=dict)


def read_sweep(path: Path) -> dict[tuple[str, ...], dict[float, tuple[float, float]]]:
    """Configurations of one Zeus ``summary_power_*.csv``: cap → (time per epoch, power W)."""
    out: dict[tuple[str, ...], dict[float, tuple[float, float]]] = {}
    with path.open(newline="") as fh:
        for r in csv.DictReader(fh):
            cfg = tuple(r[k] for k in CONFIG_KEYS)
            out.setdefault(cfg, {})[float(r["power_limit"])] = (
                float(r["time_per_epoch"]),
                float(r["average_power"]),
            )
    return out


def isotonic(ys: list[float]) -> list[float]:
    """Least-squares non-decreasing fit (pool adjacent violators, equal weights)."""
    blocks: list[list[float]] = []  # [sum, count]
    for y in ys:
        blocks.append([y, 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, n = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += n
    out: list[float] = []
    for s, n in blocks:
        out += [s / n] * int(n)
    return out


def normalised(configs: Iterable[Points], top: float) -> list[Points]:
    """Configurations measured at the top limit (the others cannot be normalised)."""
    return [c for c in configs if top in c]


def optimum(c: Points, top: float, slowdown: float | None) -> float:
    """The cap with least energy per unit of work (within ``slowdown`` of the top's speed)."""
    t_top = c[top][0]
    caps = [p for p in c if slowdown is None or t_top / c[p][0] >= 1.0 - slowdown - 1e-12]
    return min(caps, key=lambda p: (c[p][0] * c[p][1], -p))


def fit_levels(configs: list[Points], power_limit_max_w: float) -> CurveFit:
    """Per measured limit: median θ, median E/E_top, power_factor = θ × e_rel × pf_top."""
    limits = sorted({p for c in configs for p in c})
    if not limits:
        raise ValueError("no measurements")
    top = limits[-1]
    cfgs = normalised(configs, top)
    if not cfgs:
        raise ValueError(f"no configuration was measured at the top limit {top} W")
    pf_top = statistics.median(c[top][1] for c in cfgs) / power_limit_max_w
    fit = CurveFit(n_configs=len(cfgs), limits=limits, pf_top=pf_top)
    raw: list[tuple[float, float, float, float, int, str]] = []
    for p in limits:
        have = [c for c in cfgs if p in c]
        if not have:
            continue
        thr = min(1.0, statistics.median(c[top][0] / c[p][0] for c in have))
        e_rel = statistics.median((c[p][0] * c[p][1]) / (c[top][0] * c[top][1]) for c in have)
        pf = thr * e_rel * pf_top
        note = ""
        if pf > p / power_limit_max_w:
            # the medians do not compose here (their product exceeds the cap): keep the energy
            # per unit of work and lower the throughput to match the cap
            note = f"power_factor {pf:.3f} > cap/max: set to cap/max, throughput {thr:.3f} lowered"
            pf = p / power_limit_max_w
            thr = pf / (e_rel * pf_top)
        raw.append((p, thr, pf, e_rel, len(have), note))
    thr_iso = isotonic([r[1] for r in raw])
    pf_iso = isotonic([r[2] for r in raw])
    for (p, thr, pf, e_rel, n, note), t2, f2 in zip(raw, thr_iso, pf_iso, strict=True):
        notes = [note] if note else []
        if abs(t2 - thr) > 5e-4:
            notes.append(f"throughput {thr:.3f} -> {t2:.3f} (isotonic)")
        if abs(f2 - pf) > 5e-4:
            notes.append(f"power_factor {pf:.3f} -> {f2:.3f} (isotonic)")
        fit.per_limit[p] = LevelStat(
            cap_w=p,
            throughput=t2,
            power_factor=f2,
            e_rel=e_rel,
            median_power_w=statistics.median(c[p][1] for c in cfgs if p in c),
            n_configs=n,
            model_e_rel=(f2 / t2) / pf_top,
            adjusted="; ".join(notes),
        )
    for c in cfgs:
        f = optimum(c, top, None)
        g = optimum(c, top, SLOWDOWN_LIMIT)
        fit.optimum_free[f] = fit.optimum_free.get(f, 0) + 1
        fit.optimum_tight[g] = fit.optimum_tight.get(g, 0) + 1
    return fit


def pick_levels(fit: CurveFit, share: float = OPTIMUM_SHARE) -> list[float]:
    """The top limit and every limit that is the optimum of >= ``share`` of configurations."""
    need = share * fit.n_configs
    kept = {fit.limits[-1]}
    for p in fit.limits:
        if fit.optimum_free.get(p, 0) >= need or fit.optimum_tight.get(p, 0) >= need:
            kept.add(p)
    return sorted(kept)


def split_by_class(configs: Iterable[Points], power_limit_max_w: float) -> dict[str, list[Points]]:
    """Configurations by workload class (uncapped power share), classes in CLASSES order."""
    cfgs = list(configs)
    top = max(p for c in cfgs for p in c)
    out: dict[str, list[Points]] = {c.name: [] for c in CLASSES}
    for c in normalised(cfgs, top):
        out[classify(c[top][1], power_limit_max_w)].append(c)
    return out


def interp(xs: list[float], ys: list[float], x: float) -> float:
    """Piecewise-linear interpolation, flat beyond the ends."""
    if x <= xs[0]:
        return ys[0]
    for x0, y0, x1, y1 in zip(xs, ys, xs[1:], ys[1:], strict=False):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return ys[-1]


@dataclass(frozen=True)
class Level:
    cap_w: float
    throughput: float
    power_factor: float
    throughput_low: float | None = None  # a lower confidence bound (ledger refits only)


def extrapolate(curves: list[tuple[CurveFit, float]], min_w: float, max_w: float) -> list[Level]:
    """Levels for a device without a sweep: the mean of measured curves (θ, e_rel, pf_top) at
    the same fraction of each one's maximum, at EXTRAPOLATED_FRACTIONS of this device's max."""
    out: list[Level] = []
    pf_top = statistics.fmean(c.pf_top for c, _ in curves)
    prev_thr = prev_pf = 0.0
    for frac in EXTRAPOLATED_FRACTIONS:
        cap = round(frac * max_w)
        if cap < min_w:
            continue
        thr = e = 0.0
        for c, mx in curves:
            xs = [p / mx for p in c.limits]
            thr += interp(xs, [c.per_limit[p].throughput for p in c.limits], frac)
            e += interp(xs, [c.per_limit[p].e_rel for p in c.limits], frac)
        thr, e = thr / len(curves), e / len(curves)
        pf = _at_most_cap(thr * e * pf_top, cap, max_w)
        thr, pf = max(thr, prev_thr), max(pf, prev_pf)
        out.append(Level(float(cap), thr, pf))
        prev_thr, prev_pf = thr, pf
    return out


# ----------------------------------------------------------------------------- profiles


@dataclass
class DeviceFit:
    """The all-configuration fit and the per-class fits of one measured device."""

    all: CurveFit
    classes: dict[str, CurveFit]
    levels: list[float]


def fit_device(configs: list[Points], power_limit_max_w: float) -> DeviceFit:
    """Fit all configurations and each workload class; levels from the all-configuration fit."""
    all_fit = fit_levels(configs, power_limit_max_w)
    levels = pick_levels(all_fit)
    classes = {
        name: fit_levels(cfgs, power_limit_max_w)
        for name, cfgs in split_by_class(configs, power_limit_max_w).items()
        if cfgs
    }
    return DeviceFit(all_fit, classes, levels)


def _at_most_cap(pf: float, cap: float, max_w: float) -> float:
    """power_factor no higher than cap / max once rounded to the TOML's 3 decimals."""
    return min(pf, math.floor(cap / max_w * 1000 + 1e-9) / 1000)


def curve_levels(fit: CurveFit, caps: list[float], max_w: float) -> list[Level]:
    """A fit's levels at ``caps``, kept monotone (a class may lack a cap's measurement)."""
    out: list[Level] = []
    prev_thr = prev_pf = 0.0
    for cap in caps:
        if cap in fit.per_limit:
            st = fit.per_limit[cap]
            thr, pf = st.throughput, st.power_factor
        else:  # interpolate between the class's measured limits
            xs = sorted(fit.per_limit)
            thr = interp(xs, [fit.per_limit[p].throughput for p in xs], cap)
            pf = interp(xs, [fit.per_limit[p].power_factor for p in xs], cap)
        thr, pf = max(thr, prev_thr), max(_at_most_cap(pf, cap, max_w), prev_pf)
        out.append(Level(cap, thr, pf))
        prev_thr, prev_pf = thr, pf
    return out


def _fmt(x: float) -> str:
    return f"{x:.3f}".rstrip("0").rstrip(".") if x != int(x) else f"{int(x)}.0"


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _level_lines(table: str, levels: list[Level]) -> list[str]:
    lines: list[str] = []
    for lv in levels:
        lines += [
            "",
            f"[[{table}]]",
            f"cap_w = {_fmt(lv.cap_w)}",
            f"throughput = {_fmt(round(lv.throughput, 3))}",
            f"power_factor = {_fmt(round(lv.power_factor, 3))}",
        ]
        if lv.throughput_low is not None:
            # rounded down, and never above the rounded throughput: it stays a lower bound
            lo = min(math.floor(lv.throughput_low * 1000 + 1e-9) / 1000, round(lv.throughput, 3))
            lines.append(f"throughput_low = {_fmt(max(0.0, lo))}")
    return lines


@dataclass(frozen=True)
class ClassLevels:
    name: str
    configs: int
    extrapolated: bool
    levels: list[Level]


def render_toml(
    dev: Any,
    levels: list[Level],
    classes: list[ClassLevels],
    extrapolated: bool,
    source: str,
    notes: str,
    known_classes: bool = True,
) -> str:
    """The TOML text of one GPU profile (fixed key order, 3-decimal values). ``known_classes``:
    the classes are CLASSES (their share bounds and descriptions are written)."""
    lines = [
        "# Generated by `greencpn models fit` (greencpn/gpumodels/fit.py) - do not edit by "
        "hand; rerun it.",
        f"name = {_toml_str(dev.name)}",
        "aliases = [" + ", ".join(_toml_str(a) for a in dev.aliases) + "]",
        f"power_limit_min_w = {_fmt(dev.power_limit_min_w)}",
        f"power_limit_max_w = {_fmt(dev.power_limit_max_w)}",
        f"power_limit_default_w = {_fmt(dev.power_limit_default_w)}",
        f"idle_w = {_fmt(dev.idle_w)}",
        f"extrapolated = {'true' if extrapolated else 'false'}",
        f"source = {_toml_str(source)}",
        f"notes = {_toml_str(notes)}",
    ]
    lines += _level_lines("levels", levels)
    by_name = {c.name: c for c in CLASSES}
    for cl in classes:
        wc = by_name.get(cl.name) if known_classes else None
        lines += ["", "[[workload_classes]]", f"name = {_toml_str(cl.name)}"]
        if wc is not None:
            lines += [
                f"description = {_toml_str(wc.description)}",
                f"uncapped_power_share_min = {_fmt(wc.share_min)}",
                f"uncapped_power_share_max = {_fmt(wc.share_max)}",
            ]
        lines += [
            f"configs = {cl.configs}",
            f"extrapolated = {'true' if cl.extrapolated else 'false'}",
        ]
        lines += _level_lines("workload_classes.levels", cl.levels)
    return "\n".join(lines) + "\n"


@dataclass
class Bundle:
    files: dict[str, str]  # file name → TOML text
    fits: dict[str, DeviceFit]  # measured devices by key
    levels: dict[str, list[Level]]  # every device's default levels
    class_levels: dict[str, list[ClassLevels]]


def build_profiles(data_dir: Path) -> Bundle:
    """Every bundled profile from the sweeps in ``data_dir`` (deterministic)."""
    from greencpn.gpumodels.devices import DEVICES, IDLE_NOTE, ZEUS_SOURCE

    out = Bundle({}, {}, {}, {})
    for dev in DEVICES:
        if dev.sweep is None:
            continue
        path = data_dir / f"summary_power_{dev.sweep}.csv"
        configs: list[Points] = list(read_sweep(path).values())
        fit = fit_device(configs, dev.power_limit_max_w)
        lim = fit.all.limits
        if lim[-1] != dev.power_limit_max_w or lim[0] != dev.power_limit_min_w:
            raise ValueError(
                f"{path}: measured limits {lim[0]}-{lim[-1]} W do not match the device range "
                f"{dev.power_limit_min_w}-{dev.power_limit_max_w} W of {dev.name}"
            )
        out.fits[dev.key] = fit
        levels = curve_levels(fit.all, fit.levels, dev.power_limit_max_w)
        classes = [
            ClassLevels(
                name, cf.n_configs, False, curve_levels(cf, fit.levels, dev.power_limit_max_w)
            )
            for name, cf in fit.classes.items()
        ]
        out.levels[dev.key], out.class_levels[dev.key] = levels, classes
        source = ZEUS_SOURCE.format(key=dev.sweep, n_cfg=len(configs), n_pl=len(lim))
        notes = (
            f"{dev.limits_source} Idle: {dev.idle_source}. {IDLE_NOTE} "
            "power_factor = average board power of a busy GPU (DNN training) at the cap / "
            "power_limit_max_w, fitted so that power_factor / throughput relative to the top "
            "level is the per-configuration median energy per epoch (see models/README.md)."
        )
        out.files[f"{dev.key}.toml"] = render_toml(dev, levels, classes, False, source, notes)

    basis = [("v100-pcie", 250.0), ("a40", 300.0)]
    for dev in DEVICES:
        if dev.sweep is not None:
            continue
        mn, mx = dev.power_limit_min_w, dev.power_limit_max_w
        levels = extrapolate([(out.fits[k].all, m) for k, m in basis], mn, mx)
        classes = [
            ClassLevels(
                c.name,
                0,
                True,
                extrapolate([(out.fits[k].classes[c.name], m) for k, m in basis], mn, mx),
            )
            for c in CLASSES
        ]
        out.levels[dev.key], out.class_levels[dev.key] = levels, classes
        source = (
            "EXTRAPOLATED, not measured: the knee shape of the measured V100-PCIE and A40 Zeus "
            "sweeps (mean of their median throughput and median energy-per-epoch curves, "
            "linearly interpolated at the same fraction of the maximum limit; per workload "
            "class from that class's configurations) scaled to this device's NVML range. "
            + dev.limits_source
        )
        notes = (
            "Recalibrate from measurements on the real device before trusting savings from cap "
            "levels (`greencpn models fit --from-ledger` once the fleet has measured jobs at "
            f"several caps, or a Zeus power-limit sweep). Idle: {dev.idle_source}. {IDLE_NOTE}"
        )
        out.files[f"{dev.key}.toml"] = render_toml(dev, levels, classes, True, source, notes)
    return out


def result_table(b: Bundle) -> str:
    """Markdown: every measured limit of every measured device, all configurations and per class."""
    from greencpn.gpumodels.devices import DEVICES

    out = [
        "| GPU | class | cap W | cap / max | configs | median throughput | median E/E_top | "
        "power_factor | profile E/work vs top | optimum of (free / ≤ 3 %) | level |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, fit in b.fits.items():
        dev = next(d for d in DEVICES if d.key == key)
        for cname, cf in [("all", fit.all), *fit.classes.items()]:
            for p in cf.limits:
                st = cf.per_limit.get(p)
                if st is None:
                    continue
                adj = f" ({st.adjusted})" if st.adjusted else ""
                out.append(
                    f"| {dev.name} | {cname} | {p:.0f} | {p / dev.power_limit_max_w:.2f} | "
                    f"{st.n_configs} | {st.throughput:.3f} | {st.e_rel:.3f} | "
                    f"{st.power_factor:.3f}{adj} | {st.model_e_rel:.3f} | "
                    f"{cf.optimum_free.get(p, 0)} / {cf.optimum_tight.get(p, 0)} | "
                    f"{'yes' if p in fit.levels else ''} |"
                )
    for key, levels in b.levels.items():
        if key in b.fits:
            continue
        dev = next(d for d in DEVICES if d.key == key)
        sets = [("all", levels)] + [(c.name, c.levels) for c in b.class_levels[key]]
        for cname, lvls in sets:
            top = lvls[-1].power_factor / lvls[-1].throughput
            for lv in lvls:
                out.append(
                    f"| {dev.name} (extrapolated) | {cname} | {lv.cap_w:.0f} | "
                    f"{lv.cap_w / dev.power_limit_max_w:.2f} | - | {lv.throughput:.3f} | - | "
                    f"{lv.power_factor:.3f} | {(lv.power_factor / lv.throughput) / top:.3f} | - | yes |"
                )
    return "\n".join(out)


def write_bundle(data_dir: Path, out_dir: Path, table: bool = False) -> list[str]:
    """Regenerate the profiles into ``out_dir``; the lines to print."""
    b = build_profiles(data_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = []
    for name, text in b.files.items():
        (out_dir / name).write_text(text)
        lines.append(f"wrote {out_dir / name}")
    if table:
        lines.append(result_table(b))
    return lines
