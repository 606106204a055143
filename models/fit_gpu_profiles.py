"""Fit discrete GPU power-cap levels from measured power-limit sweeps and write models/gpus/*.toml.

Input: the Zeus NSDI'23 power traces (``summary_power_{gpu}.csv``, columns
``dataset,network,batch_size,optimizer,power_limit,time_per_epoch,average_power``), read from
``../shared/data/gpu`` relative to the repository root (or ``--data DIR``).

Method (see models/README.md for the result table):

1. A *configuration* is one (dataset, network, batch_size, optimizer). For each configuration,
   throughput at limit ``p`` is ``time_per_epoch(p_top) / time_per_epoch(p)`` where ``p_top`` is
   the highest limit measured (= the device maximum), so it is 1 at the top.
2. Per power limit, take the median of that ratio across configurations (``throughput``).
   Power is normalised the same way: ``power_factor = median_cfg(P(p) / P(p_top)) *
   median_cfg(P(p_top)) / power_limit_max_w`` with ``P`` the measured average board power.
   (The plain ``median(P(p)) / max`` mixes different configuration subsets: on the A40 the
   odd 25 W steps were measured for 47 of 53 configurations, which makes that median dip at
   225 W and 275 W; the normalised median is smooth and equals it at the top limit.)
3. Keep 4–6 levels: for each target fraction 0.5, 0.6, 0.7, 0.8, 0.9, 1.0 of the maximum, the
   measured limit nearest to it (ties → the higher limit), deduplicated. Levels below 50 % are
   left out: on the A40 they are past the cliff (throughput 0.35 at 33 %) and use *more*
   energy per unit of work than 50 %, so a planner would never want them.
4. Medians are checked to be non-decreasing in the cap; if a median dips (noise), the value
   is raised to the previous level's (a running maximum) and the README table says so.

Profiles for GPUs without a measured sweep (V100-SXM2, A100-SXM4-40GB, H100-SXM5-80GB) are
*extrapolated*: the same target fractions of their own maximum, with throughput and power
factor taken as the mean of the measured V100 and A40 curves at that fraction (linear
interpolation in cap/max). They are marked ``extrapolated = true`` and must be recalibrated
from measurements on the real device (e.g. a Zeus power-limit sweep).

Run ``python models/fit_gpu_profiles.py`` to regenerate; the output is deterministic and a test
checks it reproduces the committed files byte for byte.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "gpu"
OUT_DIR = REPO / "models" / "gpus"
TARGET_FRACTIONS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
CONFIG_KEYS = ("dataset", "network", "batch_size", "optimizer")

ZEUS_SOURCE = (
    "Fitted by models/fit_gpu_profiles.py from the Zeus NSDI'23 power-limit sweep "
    "summary_power_{key}.csv (ml-energy/zeus, examples/research_reproducibility/zeus_nsdi23/trace, "
    "Apache-2.0; You et al., 'Zeus: Understanding and Optimizing GPU Energy Consumption of DNN "
    "Training', NSDI 2023): {n_cfg} training configurations x {n_pl} power limits; median "
    "throughput relative to the highest limit and median average board power per limit."
)


@dataclass(frozen=True)
class Device:
    """Device facts that do not come from the sweep (limits, idle power, NVML names)."""

    key: str  # file stem
    name: str
    aliases: tuple[str, ...]
    power_limit_min_w: float
    power_limit_max_w: float
    power_limit_default_w: float
    idle_w: float
    limits_source: str
    idle_source: str
    sweep: str | None = None  # csv key when measured
    notes: str = ""


IDLE_NOTE = (
    "idle_w: typical board power of a powered, idle GPU (driver loaded, persistence mode, no "
    "process) as read with nvidia-smi; NVIDIA does not publish idle power, so this is an "
    "approximate, documented typical value - measure yours with "
    "`nvidia-smi --query-gpu=power.draw --format=csv` and override it."
)

SWEEP_LIMITS = (
    "Device limits = the NVML power-limit constraints, which the Zeus sweep spans "
    "(Zeus profiles every 25 W step from the NVML maximum down to the NVML minimum)"
)

DEVICES: tuple[Device, ...] = (
    Device(
        key="v100-pcie",
        name="V100-PCIE",
        aliases=("Tesla V100-PCIE-16GB", "Tesla V100-PCIE-32GB", "V100"),
        power_limit_min_w=100,
        power_limit_max_w=250,
        power_limit_default_w=250,
        idle_w=30,
        limits_source=SWEEP_LIMITS + ": 100-250 W, the Tesla V100 PCIe range "
        "(NVIDIA V100 datasheet: 250 W board power). The 100 W step rules out the SXM2 part, "
        "whose NVML minimum is 150 W.",
        idle_source="~25-35 W idle (P0, no load) on V100 PCIe",
        sweep="v100",
    ),
    Device(
        key="a40",
        name="A40",
        aliases=("NVIDIA A40",),
        power_limit_min_w=100,
        power_limit_max_w=300,
        power_limit_default_w=300,
        idle_w=30,
        limits_source=SWEEP_LIMITS + ": 100-300 W (NVIDIA A40 datasheet: 300 W max power).",
        idle_source="~25-35 W idle on A40",
        sweep="a40",
    ),
    Device(
        key="p100-pcie",
        name="P100-PCIE",
        aliases=("Tesla P100-PCIE-16GB", "Tesla P100-PCIE-12GB", "P100"),
        power_limit_min_w=125,
        power_limit_max_w=250,
        power_limit_default_w=250,
        idle_w=30,
        limits_source=SWEEP_LIMITS + ": 125-250 W (NVIDIA Tesla P100 PCIe datasheet: 250 W).",
        idle_source="~25-35 W idle on P100 PCIe",
        sweep="p100",
    ),
    Device(
        key="quadro-rtx-6000",
        name="Quadro-RTX-6000",
        aliases=("Quadro RTX 6000", "RTX6000"),
        power_limit_min_w=100,
        power_limit_max_w=260,
        power_limit_default_w=260,
        idle_w=20,
        limits_source=SWEEP_LIMITS + ": 100-260 W (NVIDIA Quadro RTX 6000 datasheet: 260 W "
        "max power, blower version).",
        idle_source="~15-25 W idle on Quadro RTX 6000",
        sweep="rtx6000",
    ),
    Device(
        key="v100-sxm2",
        name="V100-SXM2",
        aliases=("Tesla V100-SXM2-16GB", "Tesla V100-SXM2-32GB"),
        power_limit_min_w=150,
        power_limit_max_w=300,
        power_limit_default_w=300,
        idle_w=40,
        limits_source="NVML limits of the Tesla V100 SXM2 (DGX-1, p3 instances): 150-300 W "
        "(NVIDIA V100 datasheet: 300 W for SXM2).",
        idle_source="~40-55 W idle on V100 SXM2",
    ),
    Device(
        key="a100-sxm4-40gb",
        name="A100-SXM4-40GB",
        aliases=("NVIDIA A100-SXM4-40GB", "A100"),
        power_limit_min_w=100,
        power_limit_max_w=400,
        power_limit_default_w=400,
        idle_w=55,
        limits_source="NVML limits of the A100 SXM4 40GB: 100-400 W (NVIDIA A100 datasheet: "
        "400 W max TDP for SXM4).",
        idle_source="~50-60 W idle on A100 SXM4",
    ),
    Device(
        key="h100-sxm5-80gb",
        name="H100-SXM5-80GB",
        aliases=("NVIDIA H100 80GB HBM3", "H100"),
        power_limit_min_w=200,
        power_limit_max_w=700,
        power_limit_default_w=700,
        idle_w=70,
        limits_source="NVML limits of the H100 SXM5 80GB: 200-700 W (NVIDIA H100 datasheet: "
        "up to 700 W configurable max TDP for SXM).",
        idle_source="~60-80 W idle on H100 SXM5",
    ),
)


@dataclass
class LevelFit:
    cap_w: float
    throughput: float
    power_factor: float
    median_power_w: float
    n_configs: int
    adjusted: str = ""  # which median was raised to keep the curve monotone


@dataclass
class SweepFit:
    key: str
    n_configs: int
    limits: list[float]
    per_limit: dict[float, LevelFit] = field(default_factory=dict)


def read_sweep(path: Path) -> list[dict[str, str]]:
    """Rows of one ``summary_power_*.csv`` file."""
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def fit_sweep(key: str, rows: list[dict[str, str]], power_limit_max_w: float) -> SweepFit:
    """Median normalised throughput and median power per measured power limit."""
    by_cfg: dict[tuple[str, ...], dict[float, tuple[float, float]]] = {}
    for r in rows:
        cfg = tuple(r[k] for k in CONFIG_KEYS)
        by_cfg.setdefault(cfg, {})[float(r["power_limit"])] = (
            float(r["time_per_epoch"]),
            float(r["average_power"]),
        )
    limits = sorted({pl for d in by_cfg.values() for pl in d})
    top = limits[-1]
    ratios: dict[float, list[float]] = {pl: [] for pl in limits}
    pratios: dict[float, list[float]] = {pl: [] for pl in limits}
    powers: dict[float, list[float]] = {pl: [] for pl in limits}
    for d in by_cfg.values():
        if top not in d:
            continue  # cannot normalise this configuration
        t_top, p_top = d[top]
        for pl, (t, p) in d.items():
            ratios[pl].append(t_top / t)
            pratios[pl].append(p / p_top)
            powers[pl].append(p)
    top_power_w = statistics.median(powers[top])
    fit = SweepFit(key=key, n_configs=len(by_cfg), limits=limits)
    prev_thr, prev_pf = 0.0, 0.0
    for pl in limits:
        thr = min(1.0, statistics.median(ratios[pl]))
        med_p = statistics.median(powers[pl])
        pf = min(1.0, statistics.median(pratios[pl]) * top_power_w / power_limit_max_w)
        adjusted = ("throughput " if thr < prev_thr else "") + ("power " if pf < prev_pf else "")
        thr, pf = max(thr, prev_thr), max(pf, prev_pf)
        fit.per_limit[pl] = LevelFit(pl, thr, pf, med_p, len(ratios[pl]), adjusted.strip())
        prev_thr, prev_pf = thr, pf
    return fit


def pick_levels(limits: list[float], power_limit_max_w: float) -> list[float]:
    """Measured limits nearest to each target fraction of the maximum (ties → higher)."""
    chosen: list[float] = []
    for frac in TARGET_FRACTIONS:
        target = frac * power_limit_max_w
        best = min(limits, key=lambda pl: (abs(pl - target), -pl))
        if best not in chosen:
            chosen.append(best)
    return sorted(chosen)


def _interp(xs: list[float], ys: list[float], x: float) -> float:
    if x <= xs[0]:
        return ys[0]
    for (x0, y0), (x1, y1) in zip(
        zip(xs, ys, strict=True), zip(xs[1:], ys[1:], strict=True), strict=False
    ):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    return ys[-1]


def _curve(fit: SweepFit, max_w: float) -> tuple[list[float], list[float], list[float]]:
    xs = [pl / max_w for pl in fit.limits]
    thr = [fit.per_limit[pl].throughput for pl in fit.limits]
    pf = [fit.per_limit[pl].power_factor for pl in fit.limits]
    return xs, thr, pf


def _fmt(x: float) -> str:
    return f"{x:.3f}".rstrip("0").rstrip(".") if x != int(x) else f"{int(x)}.0"


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_toml(
    dev: Device, levels: list[LevelFit], extrapolated: bool, source: str, notes: str
) -> str:
    """The TOML text of one GPU profile (fixed key order, 3-decimal values)."""
    lines = [
        "# Generated by models/fit_gpu_profiles.py - do not edit by hand; rerun the script.",
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
    for lv in levels:
        lines += [
            "",
            "[[levels]]",
            f"cap_w = {_fmt(lv.cap_w)}",
            f"throughput = {_fmt(round(lv.throughput, 3))}",
            f"power_factor = {_fmt(round(lv.power_factor, 3))}",
        ]
    return "\n".join(lines) + "\n"


def build_profiles(
    data_dir: Path,
) -> tuple[dict[str, str], dict[str, SweepFit], dict[str, list[LevelFit]]]:
    """All profiles as ``{file name: TOML text}``, plus the fits for the README table."""
    fits: dict[str, SweepFit] = {}
    chosen: dict[str, list[LevelFit]] = {}
    files: dict[str, str] = {}
    for dev in DEVICES:
        if dev.sweep is None:
            continue
        path = data_dir / f"summary_power_{dev.sweep}.csv"
        fit = fit_sweep(dev.sweep, read_sweep(path), dev.power_limit_max_w)
        if fit.limits[-1] != dev.power_limit_max_w or fit.limits[0] != dev.power_limit_min_w:
            raise SystemExit(
                f"{path}: measured limits {fit.limits[0]}-{fit.limits[-1]} W do not match the "
                f"device range {dev.power_limit_min_w}-{dev.power_limit_max_w} W of {dev.name}"
            )
        fits[dev.key] = fit
        levels = [fit.per_limit[pl] for pl in pick_levels(fit.limits, dev.power_limit_max_w)]
        chosen[dev.key] = levels
        source = ZEUS_SOURCE.format(key=dev.sweep, n_cfg=fit.n_configs, n_pl=len(fit.limits))
        notes = (
            f"{dev.limits_source} Idle: {dev.idle_source}. {IDLE_NOTE} "
            "power_factor = average board power of a busy GPU (DNN training) at the cap / "
            "power_limit_max_w, normalised per configuration (see models/README.md)."
        )
        files[f"{dev.key}.toml"] = render_toml(dev, levels, False, source, notes)

    v_xs, v_thr, v_pf = _curve(fits["v100-pcie"], 250.0)
    a_xs, a_thr, a_pf = _curve(fits["a40"], 300.0)
    for dev in DEVICES:
        if dev.sweep is not None:
            continue
        levels = []
        for frac in TARGET_FRACTIONS:
            cap = round(frac * dev.power_limit_max_w)
            if cap < dev.power_limit_min_w:
                continue
            thr = (_interp(v_xs, v_thr, frac) + _interp(a_xs, a_thr, frac)) / 2
            pf = (_interp(v_xs, v_pf, frac) + _interp(a_xs, a_pf, frac)) / 2
            levels.append(LevelFit(cap, thr, pf, pf * dev.power_limit_max_w, 0))
        chosen[dev.key] = levels
        source = (
            "EXTRAPOLATED, not measured: the knee shape of the measured V100-PCIE and A40 Zeus "
            "sweeps (mean of their median throughput and power_factor curves, linearly "
            "interpolated at the same fraction of the maximum limit) scaled to this device's "
            "NVML range. " + dev.limits_source
        )
        notes = (
            "Recalibrate from measurements on the real device before trusting savings from cap "
            "levels (e.g. a Zeus power-limit sweep, then add it to fit_gpu_profiles.py). "
            f"Idle: {dev.idle_source}. {IDLE_NOTE}"
        )
        files[f"{dev.key}.toml"] = render_toml(dev, levels, True, source, notes)
    return files, fits, chosen


def result_table(fits: dict[str, SweepFit], chosen: dict[str, list[LevelFit]]) -> str:
    """Markdown table of every measured limit (chosen levels in bold)."""
    out = [
        "| GPU | cap W | cap / max | configs | median throughput | median raw power W | "
        "power_factor | energy per work vs max | level |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, fit in fits.items():
        dev = next(d for d in DEVICES if d.key == key)
        top = fit.per_limit[fit.limits[-1]]
        picked = {lv.cap_w for lv in chosen[key]}
        for pl in fit.limits:
            lv = fit.per_limit[pl]
            epw = (lv.power_factor / lv.throughput) / (top.power_factor / top.throughput)
            flag = "yes" if pl in picked else ""
            adj = f" ({lv.adjusted} raised to the lower cap's value)" if lv.adjusted else ""
            out.append(
                f"| {dev.name} | {pl:.0f} | {pl / dev.power_limit_max_w:.2f} | {lv.n_configs} | "
                f"{lv.throughput:.3f} | {lv.median_power_w:.1f} | {lv.power_factor:.3f}{adj} | "
                f"{epw:.3f} | {flag} |"
            )
    for key, levels in chosen.items():
        if key in fits:
            continue
        dev = next(d for d in DEVICES if d.key == key)
        for lv in levels:
            out.append(
                f"| {dev.name} (extrapolated) | {lv.cap_w:.0f} | {lv.cap_w / dev.power_limit_max_w:.2f}"
                f" | - | {lv.throughput:.3f} | {lv.median_power_w:.1f} | {lv.power_factor:.3f} | "
                f"{(lv.power_factor / lv.throughput) / (levels[-1].power_factor / levels[-1].throughput):.3f}"
                " | yes |"
            )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="folder with summary_power_*.csv"
    )
    ap.add_argument("--out", type=Path, default=OUT_DIR, help="where to write the TOML files")
    ap.add_argument("--table", action="store_true", help="print the fit table (Markdown)")
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(
            f"error: {args.data} not found; pass --data DIR with summary_power_*.csv",
            file=sys.stderr,
        )
        return 2
    files, fits, chosen = build_profiles(args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (args.out / name).write_text(text)
        print(f"wrote {args.out / name}")
    if args.table:
        print(result_table(fits, chosen))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
