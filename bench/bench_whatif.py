"""Bench: the what-if replay — forecast cost and accuracy without look-ahead, published-result
checks, and replay speed. Writes ``bench/results/whatif.md``.

1. Replayed forecasts: for each zone of ``electricitymaps_hourly_lca_2021-2023.csv``, a 48 h
   forecast issued every hour of 2023 by :class:`~greencpn.sources.replay.ReplayCarbonSource`
   (one forecaster per zone, history seen so far, incremental refit): seconds per year and MAE by
   lead bucket, beside the per-zone reference of ``bench/results/forecast.md`` (same model given
   the whole series at once). The old cost (a fresh forecaster fitted per call, as
   ``SourceChain`` does) is timed on 20 calls and extrapolated to 8,760 (labelled so).
2. WattTime CAISO_NORTH: hourly replay with the real issued forecasts (archive) vs the
   forecaster alone, MAE of the first slot.
3. Let's Wait Awhile Scenario I (nightly 30-min job, ±8 h, perfect forecast) on its 2020 data.
4. Idle shutdown on Philly's per-minute node sequence (active + max(2, 10 %) spares, 10-min boot).
5. Heuristic policies on a year of the GAIA/PAI trace on the example fleet: wall time, slots/s.
6. The ``milp`` policy (the controller step every slot) and its perfect-foresight oracle on two
   days of the same trace: share of the oracle's saving, seconds per step.

Run: ``.venv/bin/python bench/bench_whatif.py`` (about 10 minutes on 2 cores); pass section
numbers (``bench_whatif.py 6``) to re-measure some sections and keep the others' text.
"""

from __future__ import annotations

import os
import platform
import re
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from greencpn.config import load_config  # noqa: E402
from greencpn.sources.files import (  # noqa: E402
    read_watttime_actual,
    read_watttime_forecasts,
    read_wide,
)
from greencpn.sources.forecast import default_forecaster  # noqa: E402
from greencpn.sources.replay import ReplayCarbonSource  # noqa: E402
from greencpn.whatif.engine import ReplaySettings, run_replay  # noqa: E402
from greencpn.whatif.jobs import load_jobs  # noqa: E402
from greencpn.whatif.lwa import nightly_saving, read_half_hourly  # noqa: E402
from greencpn.whatif.metrics import compare  # noqa: E402
from greencpn.whatif.model import FleetSpec  # noqa: E402
from greencpn.whatif.node_demand import (  # noqa: E402
    PeakForecastRule,
    read_node_sequence,
    replay,
    replay_forecast,
    spares_rule,
)

# ../shared/data beside the checkout (a worktree sits one level deeper)
DATA = next(
    (
        up / "shared" / "data"
        for up in (ROOT.parent, ROOT.parent.parent)
        if (up / "shared" / "data").is_dir()
    ),
    ROOT.parent / "shared" / "data",
)
OUT = ROOT / "bench" / "results" / "whatif.md"
EM = DATA / "carbon" / "electricitymaps_hourly_lca_2021-2023.csv"
BUCKETS = ((0, 6, "1-6 h"), (6, 24, "7-24 h"), (24, 48, "25-48 h"))
YEAR = pd.Timestamp("2023-01-01", tz="UTC")


def reference_mae() -> dict[str, list[str]]:
    """Per-zone linear-lags MAE of bench/results/forecast.md (zone -> 3 bucket cells)."""
    f = ROOT / "bench" / "results" / "forecast.md"
    out: dict[str, list[str]] = {}
    if not f.is_file():
        return out
    text = f.read_text()
    part = text.split("### `linear-lags` per zone", 1)
    if len(part) < 2:
        return out
    for line in part[1].splitlines()[4:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        out[cells[0]] = [re.sub(r" \(.*\)", "", c) for c in cells[1:4]]
    return out


def forecasts_section() -> list[str]:
    series = {z: cs.intensity_g_per_kwh for z, cs in read_wide(EM).items()}
    ref = reference_mae()
    lines = [
        "### 1. Replayed forecasts (no look-ahead), 2023, hourly issues x 48 h",
        "",
        "One `linear-lags` forecaster per zone fitted on the history seen so far (2021 onward) and "
        "extended slot by slot (`extend_history`), weights refitted daily. MAE in g/kWh; the "
        "reference is `bench/results/forecast.md` (same model, whole series given at once).",
        "",
        "| zone | s per year of hourly forecasts | MAE 1-6 h | 7-24 h | 25-48 h | reference 1-6 / 7-24 / 25-48 h |",
        "|---|---|---|---|---|---|",
    ]
    secs = []
    for z, s in series.items():
        src = ReplayCarbonSource({z: s})
        n = 8760
        out = np.empty((n, 48))
        t0 = time.perf_counter()
        for k in range(n):
            out[k] = src.forecast_values(z, (YEAR + pd.Timedelta(hours=k)).to_pydatetime(), 48)
        el = time.perf_counter() - t0
        secs.append(el)
        y = s.to_numpy(dtype=float)
        i0 = int(s.index.get_loc(YEAR))
        m = min(n, len(y) - i0 - 48)
        act = np.lib.stride_tricks.sliding_window_view(y[i0:], 48)[:m]
        err = np.abs(out[:m] - act)
        maes = [float(np.nanmean(err[:, a:b])) for a, b, _ in BUCKETS]
        r = " / ".join(ref.get(z, ["-", "-", "-"]))
        lines.append(f"| {z} | {el:.1f} | {maes[0]:.1f} | {maes[1]:.1f} | {maes[2]:.1f} | {r} |")
    # the old way: a fresh forecaster fitted on the visible history for every call
    s = series["DE"]
    t0 = time.perf_counter()
    for k in range(20):
        t = YEAR + pd.Timedelta(hours=k)
        f = default_forecaster()
        f.fit(s[s.index < t])
        f.predict(t.to_pydatetime(), 48)
    per = (time.perf_counter() - t0) / 20
    lines += [
        "",
        f"Mean {np.mean(secs):.1f} s per zone-year (max {np.max(secs):.1f} s). For comparison, "
        f"a fresh forecaster fitted per call (as `SourceChain` does): {per * 1000:.0f} ms per "
        f"call on DE, i.e. **{per * 8760 / 60:.0f} min per zone-year, extrapolated** from 20 calls.",
        "",
    ]
    return lines


def watttime_section() -> list[str]:
    d = DATA / "carbon" / "watttime_caiso_north_2023"
    actual = read_watttime_actual(
        d / "watttime2023_caiso-north_actual.csv", slot=timedelta(hours=1)
    )
    arch = read_watttime_forecasts(d / "watttime2023_caiso-north_forecast.csv")
    s = actual.intensity_g_per_kwh
    z = actual.zone
    with_arch = ReplayCarbonSource({z: s}, archives={z: arch})
    alone = ReplayCarbonSource({z: s})
    start = s.index[0] + pd.Timedelta(days=15)
    issues = pd.date_range(start, s.index[-1] - pd.Timedelta(hours=2), freq="1h")
    e_a, e_f = [], []
    for t in issues:
        # issued 5 min after the hour (the archive's first forecast of that hour)
        when = (t + pd.Timedelta(minutes=5)).to_pydatetime()
        truth = float(s[t])
        e_a.append(abs(with_arch.forecast_values(z, when, 2)[0] - truth))
        e_f.append(abs(alone.forecast_values(z, when, 2)[0] - truth))
    return [
        "### 2. WattTime CAISO_NORTH: real issued forecasts in the replay",
        "",
        f"Hourly replay {issues[0]:%Y-%m-%d} to {issues[-1]:%Y-%m-%d} ({len(issues)} issues at :05), "
        "MAE of the current slot's forecast against its actual hourly mean (MOER, g/kWh): "
        f"real WattTime forecast (archive, mean of its 5-min points in the slot) "
        f"**{np.mean(e_a):.1f}**, `linear-lags` on the 15+ days seen so far **{np.mean(e_f):.1f}**.",
        "",
    ]


def lwa_section() -> list[str]:
    pub = {"ger": ("DE", 13.5), "gb": ("GB", 10.2), "fr": ("FR", 7.5)}
    lines = [
        "### 3. Let's Wait Awhile, Scenario I (nightly job, ±8 h, perfect forecast)",
        "",
        "A 30-min job at 01:00 UTC every night of 2020, shifted to the lowest-intensity half-hour "
        "within ±8 h (`lets-wait-awhile:perfect=1` on the what-if engine, 30-min slots, the "
        "dataset's :00/:30 values as in the paper's `simulate.py`). Saving = 1 - mean carbon per "
        "shifted night / mean carbon per unshifted night (denominator: the job run at 01:00).",
        "",
        "| zone | measured saving | published | difference | half-hours missing in file | wall s |",
        "|---|---|---|---|---|---|",
    ]
    for stem, (zone, ref) in pub.items():
        s, missing = read_half_hourly(DATA / "carbon" / "lets_wait_awhile_2020" / f"{stem}_ci.csv")
        r = nightly_saving(s)
        lines.append(
            f"| {zone} | {r['saving_pct']:.2f} % | {ref} % | {r['saving_pct'] - ref:+.2f} pp | "
            f"{missing} | {r['wall_s']:.1f} |"
        )
    lines.append("")
    return lines


def philly_section() -> list[str]:
    active, total = read_node_sequence(DATA / "traces" / "philly_node_sequence_per_minute.csv")
    t0 = time.perf_counter()
    r = replay(active, total, spares=spares_rule(2, 0.10), boot_min=10)
    el = time.perf_counter() - t0
    lines = [
        "### 4. Idle shutdown on Philly's per-minute node sequence",
        "",
        f"{r.minutes:,} minutes, 420 nodes (552 / 174 in {int(np.sum(total != 420))} minutes). Rule: "
        "keep active + max(2, ceil(10 % of active)) nodes up, boot 10 min; idle node 30 % of "
        "busy power, booting node 30 %, off 0.",
        "",
        "| figure | measured | published |",
        "|---|---|---|",
        f"| idle energy / all-on energy | {r.idle_share_of_baseline_energy_pct:.2f} % | ~9.6 % |",
        f"| energy saved / all-on energy | {r.energy_saved_pct:.2f} % | ~6.6 % |",
        f"| minutes with demand waiting / all minutes | {r.waiting_minutes_pct:.2f} % | 1.3 % |",
        f"| node boots (per node of 420) | {r.boots:,} ({r.boots / 420:.0f}) | - |",
        "",
        f"Replay time {el:.1f} s.",
        "",
        "**Load forecasting** (`PeakForecastRule`, fed one minute at a time, no look-ahead): keep "
        "up the forecast peak of busy nodes over the next boot time = the highest busy count of "
        "the last 60 min + the q-quantile of that forecast's own measured error (minutes whose "
        "10-min window has closed, last 28 days, refitted hourly; 10 spares during the first "
        "day). Same accounting as above; issue goal: >= 8 % saved with <= 0.5 % of minutes "
        "waiting.",
        "",
        "| rule | energy saved / all-on energy | minutes waiting / all minutes | node boots | replay s |",
        "|---|---|---|---|---|",
        f"| active + max(2, 10 %) spares | {r.energy_saved_pct:.2f} % | "
        f"{r.waiting_minutes_pct:.2f} % | {r.boots:,} | {el:.1f} |",
    ]
    rules: list[tuple[str, dict[str, float]]] = [
        (f"load forecast, q = {q}", {"quantile": q}) for q in (0.99, 0.992, 0.995)
    ]
    surge = [
        ("load forecast + surge, q = 0.99, +30 for 45 min", (0.99, 30)),
        ("load forecast + surge, q = 0.989, +40 for 45 min", (0.989, 40)),
    ]
    rules += [
        (lab, {"quantile": q, "surge_spares": n, "surge_hold_min": 45}) for lab, (q, n) in surge
    ]
    half = len(active) // 2
    halves: list[str] = []
    for label, kw in rules:
        t0 = time.perf_counter()
        f = replay_forecast(active, total, PeakForecastRule(**kw), boot_min=10)  # type: ignore[arg-type]
        el = time.perf_counter() - t0
        lines.append(
            f"| {label} | {f.energy_saved_pct:.3f} % | "
            f"{f.waiting_minutes_pct:.3f} % | {f.boots:,} | {el:.1f} |"
        )
        cells = []
        for sl in (slice(0, half), slice(half, None)):
            h = replay_forecast(active, total, PeakForecastRule(**kw), accounted=sl)  # type: ignore[arg-type]
            cells.append(f"{h.energy_saved_pct:.3f} % / {h.waiting_minutes_pct:.3f} %")
        halves.append(f"| {label} | {cells[0]} | {cells[1]} |")
    lines += [
        "",
        "Surge (`surge_spares`, `surge_hold_min`; off by default): after a minute whose busy "
        "count exceeded what the rule asked for the minute before (a shortfall the rule sees "
        "itself), keep that many more nodes up for the hold. Each half of the series accounted "
        "alone (the rule still fed from the first minute), energy saved / minutes waiting:",
        "",
        f"| rule | minutes 0–{half - 1:,} | minutes {half:,}–{len(active) - 1:,} |",
        "|---|---|---|",
        *halves,
        "",
        "The default (q = 0.992, no surge) keeps demand waiting within 0.5 % of minutes but "
        "stays just under the 8 % goal. The surge rule at q = 0.989, +40 spares for 45 min meets "
        "both over the series (>= 8 % saved, <= 0.5 % waiting) — **its parameters were chosen "
        "on this same series (in-sample)**, and it boots more nodes. The evidence that the "
        "surge itself helps beyond tuning: q = 0.99, +30 for 45 min saves more than the default "
        "with no more waiting in each half accounted alone. Also tried, all on the frontier or "
        "below: hour-of-day and volatility-conditioned quantiles, per-minute quantile spares "
        "without the recent peak (that one cycles nodes: ~80,000 boots).",
        "",
    ]
    return lines


def speed_section() -> list[str]:
    cfg = load_config(ROOT / "data" / "example" / "fleet.toml")
    fleet = FleetSpec.from_config(cfg)
    zones = sorted({s.zone for s in fleet.sites})
    wide = read_wide(EM, zones=zones)
    actual = {z: wide[z].intensity_g_per_kwh for z in zones}
    start = datetime(2023, 1, 1, tzinfo=UTC)
    end = datetime(2023, 12, 29, tzinfo=UTC)  # the trace's hours reach 8760; keep the drain inside
    jobs = load_jobs(
        DATA / "traces" / "gaia_pai-100k.csv", fleet, slack="+24h", start=start, end=end
    )
    st = ReplaySettings(start, end, drain=timedelta(hours=48))
    fc = ReplayCarbonSource(actual)
    perfect = ReplayCarbonSource(actual, mode="perfect")
    pols = [
        "carbon-agnostic",
        "shutdown-idle",
        "lets-wait-awhile",
        "carbon-time",
        "lets-wait-awhile:shutdown=1",
        "lets-wait-awhile:perfect=1",
    ]
    runs = []
    for p in pols:
        runs.append(run_replay(fleet, jobs, p, forecasts=fc, actuals=perfect, settings=st))
    table = compare(runs)
    lines = [
        "### 5. Heuristic policies, one year of the GAIA/PAI trace",
        "",
        f"{len(jobs):,} jobs released {start:%Y-%m-%d} to {end:%Y-%m-%d} (deadline release + run "
        f"time + 24 h, home site hashed), example fleet ({len(fleet.sites)} sites, "
        f"{sum(p.nodes for p in fleet.pools)} nodes, {sum(p.nodes * p.gpus_per_node for p in fleet.pools)} "
        f"GPUs; zones {', '.join(zones)}), hourly slots, {st.n_slots} slots per policy. "
        "Policies run one after another; forecasts are shared between policies through the "
        "replay source's memo (the first forecast-using policy pays for them). "
        "Saving denominators: carbon of carbon-agnostic. Oracle = "
        f"`{table['oracle']}` (a perfect-foresight heuristic, not the MILP oracle).",
        "",
        "| policy | wall s | slots/s | energy MWh | carbon t | saved % | share of oracle's saving | mean / p95 wait h | deadline misses | unfinished | cycles/node mean (max) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run, row in zip(runs, table["rows"], strict=True):
        share = row["share_of_oracle_saving"]
        lines.append(
            f"| `{row['policy']}` | {run.wall_s:.1f} | {st.n_slots / run.wall_s:.0f} | "
            f"{row['energy_kwh'] / 1000:.1f} | {row['carbon_kg'] / 1000:.2f} | "
            f"{row['carbon_saved_pct']:.2f} | {'-' if share is None else f'{share:.2f}'} | "
            f"{row['mean_wait_h']:.2f} / {row['p95_wait_h']:.2f} | {row['deadline_misses']} | "
            f"{row['unfinished_jobs']} | {row['power_cycles_per_node_mean']:.1f} "
            f"({row['power_cycles_per_node_max']}) |"
        )
    lines.append("")
    return lines


def milp_section() -> list[str]:
    cfg = load_config(ROOT / "data" / "example" / "fleet.toml")
    fleet = FleetSpec.from_config(cfg)
    zones = sorted({s.zone for s in fleet.sites})
    wide = read_wide(EM, zones=zones)
    actual = {z: wide[z].intensity_g_per_kwh for z in zones}
    start = datetime(2023, 3, 1, tzinfo=UTC)
    end = start + timedelta(days=2)
    jobs = load_jobs(
        DATA / "traces" / "gaia_pai-100k.csv", fleet, slack="+24h", start=start, end=end
    )
    st = ReplaySettings(start, end, drain=timedelta(hours=48))
    fc = ReplayCarbonSource(actual)
    perfect = ReplayCarbonSource(actual, mode="perfect")
    pols = [
        "carbon-agnostic",
        "shutdown-idle",
        "lets-wait-awhile:shutdown=1",
        "carbon-time:shutdown=1",
        "milp:time_limit_s=20",
        "milp:perfect=1,time_limit_s=20",
    ]
    runs = [run_replay(fleet, jobs, p, forecasts=fc, actuals=perfect, settings=st) for p in pols]
    oracle = pols[-1]
    table = compare(runs, oracle=oracle)
    lines = [
        "### 6. The MILP policy (controller step every slot) against its oracle",
        "",
        f"{len(jobs)} GAIA/PAI jobs released {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} "
        f"(deadline +24 h), example fleet, hourly slots, {st.n_slots} slots (48 h accounted after "
        "the last release). `milp`: greencpn's controller in enforce mode on the simulated fleet, "
        "re-planning every slot over the config's 48-slot horizon, with forecasts issued at the "
        "time; oracle = the same with actual intensities (`perfect=1`). Share of the oracle's "
        "saving = (agnostic − run) / (agnostic − oracle) carbon.",
        "",
        "| policy | wall s | s per slot | energy MWh | carbon t | saved % | share of oracle's saving | mean / p95 wait h | deadline misses | unfinished | cycles/node mean |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run, row in zip(runs, table["rows"], strict=True):
        share = row["share_of_oracle_saving"]
        steps = run.extra.get("steps") or []
        bad = sum(1 for s in steps if s["status"] not in ("ok", "StepStatus.OK"))
        note = f" ({bad} steps not ok)" if bad else ""
        lines.append(
            f"| `{row['policy']}`{note} | {run.wall_s:.1f} | {run.wall_s / st.n_slots:.2f} | "
            f"{row['energy_kwh'] / 1000:.2f} | {row['carbon_kg'] / 1000:.3f} | "
            f"{row['carbon_saved_pct']:.2f} | {'-' if share is None else f'{share:.3f}'} | "
            f"{row['mean_wait_h']:.2f} / {row['p95_wait_h']:.2f} | {row['deadline_misses']} | "
            f"{row['unfinished_jobs']} | {row['power_cycles_per_node_mean']:.2f} |"
        )
    per = runs[-2].wall_s / st.n_slots
    lines += [
        "",
        f"`milp` took {per:.2f} s per hourly slot here, i.e. about {per * 8760 / 60:.0f} min "
        "for a year of hourly steps (**extrapolated**, not measured over a year; the issue's "
        "target is ≤ 15 min).",
        "",
    ]
    return lines


def _example_replay(
    days: float,
    *,
    drain_h: float = 24.0,
    start: datetime | None = None,
    config: Path | None = None,
):
    """The example fleet (``config``: a copy of it, e.g. :func:`_example_copy_with`), the
    GAIA/PAI jobs released in ``days`` from ``start`` (deadline +24 h), replayed carbon."""
    cfg = load_config(config or ROOT / "data" / "example" / "fleet.toml")
    fleet = FleetSpec.from_config(cfg)
    zones = sorted({s.zone for s in fleet.sites})
    wide = read_wide(EM, zones=zones)
    actual = {z: wide[z].intensity_g_per_kwh for z in zones}
    start = start or datetime(2023, 3, 1, tzinfo=UTC)
    end = start + timedelta(days=days)
    jobs = load_jobs(
        DATA / "traces" / "gaia_pai-100k.csv", fleet, slack="+24h", start=start, end=end
    )
    st = ReplaySettings(start, end, drain=timedelta(hours=drain_h))
    return fleet, jobs, ReplayCarbonSource(actual), ReplayCarbonSource(actual, mode="perfect"), st


def attribution_section() -> list[str]:
    from greencpn.whatif.attribution import attribute, attribution_specs
    from greencpn.whatif.parallel import run_policies

    fleet, jobs, fc, perfect, st = _example_replay(1.0)
    out = [
        "### 7. Lever attribution (the MILP policy with one lever at a time)",
        "",
        f"{len(jobs)} GAIA/PAI jobs released 2023-03-01 (deadline +24 h), example fleet, hourly "
        f"slots, {st.n_slots} slots (24 h accounted after the last release), the controller "
        "step every slot. Method: `levers=none` is the reference (the same control step, no "
        "lever: jobs at their home site, planning deadline = earliest finish + 1 slot, nodes "
        "and caps untouched); each lever alone; all levers. time off = planning deadline at the "
        "earliest finish at full power + one slot; space off = home site only (per-site "
        "jurisdiction tag); power / caps = the controller's levers. Alone saving = "
        "carbon(none) − carbon(lever alone); the alone savings need not add up to the "
        "all-lever saving (interaction = all − sum). Run in a 2-process pool.",
        "",
    ]
    for label, base in (
        ("forecasts issued at the time", "milp:time_limit_s=20"),
        ("perfect foresight", "milp:perfect=1,time_limit_s=20"),
    ):
        specs = attribution_specs(base)
        t0 = time.perf_counter()
        runs = run_policies(
            fleet,
            jobs,
            ["carbon-agnostic", *specs],
            forecasts=fc,
            actuals=perfect,
            settings=st,
            workers=2,
        )
        wall = time.perf_counter() - t0
        table = compare(runs, oracle=None)
        att = attribute(table["rows"], base)
        by = {r["policy"]: r for r in table["rows"]}
        out += [
            f"**{label}** (`{base}`), {wall:.0f} s wall for {len(specs)} runs: reference "
            f"`{att['reference']}` {att['reference_carbon_kg']:,.0f} kg CO2e "
            f"(carbon-agnostic: {by['carbon-agnostic']['carbon_kg']:,.0f} kg); all levers save "
            f"{att['all_saving_kg']:,.0f} kg = {att['all_saving_pct_of_reference']:.1f} % of the "
            "reference's carbon.",
            "",
            "| lever | saved alone, kg CO2e | % of the reference's carbon | share of the all-lever saving | deadline misses (alone run) | mean wait h (alone run) |",
            "|---|---|---|---|---|---|",
        ]
        for r in att["levers"]:
            row = by[r["policy"]]
            out.append(
                f"| {r['lever']} | {r['alone_saving_kg']:,.0f} | "
                f"{r['alone_saving_pct_of_reference']:.1f} % | "
                f"{r['alone_share_of_all_saving']:.2f} | {row['deadline_misses']} | "
                f"{row['mean_wait_h']:.2f} |"
            )
        out += [
            f"| sum of alone | {att['sum_alone_kg']:,.0f} | | | | |",
            f"| all levers | {att['all_saving_kg']:,.0f} | "
            f"{att['all_saving_pct_of_reference']:.1f} % | 1.00 | "
            f"{by[att['all']]['deadline_misses']} | {by[att['all']]['mean_wait_h']:.2f} |",
            f"| interaction (all − sum) | {att['interaction_kg']:+,.0f} | | | | |",
            "",
        ]
    return out


def parallel_section() -> list[str]:
    from greencpn.whatif.parallel import run_policies
    from greencpn.whatif.sweep import make_tasks, run_sweep

    fleet, jobs, fc, perfect, st = _example_replay(28.0, drain_h=48.0)
    pols = [
        "carbon-agnostic",
        "shutdown-idle",
        "lets-wait-awhile",
        "carbon-time",
        "lets-wait-awhile:perfect=1",
    ]
    res = {}
    for w in (1, 2):
        fc_w = ReplayCarbonSource(fc.actuals) if hasattr(fc, "actuals") else fc
        t0 = time.perf_counter()
        runs = run_policies(
            fleet, jobs, pols, forecasts=fc_w, actuals=perfect, settings=st, workers=w
        )
        res[w] = (time.perf_counter() - t0, runs)
    rows = {
        w: [{k: v for k, v in r.items() if k != "wall_s"} for r in compare(x[1])["rows"]]
        for w, x in res.items()
    }
    same = rows[1] == rows[2]
    out = [
        "### 8. Policies in parallel processes, and the sweep",
        "",
        f"{len(pols)} heuristic policies, {len(jobs):,} jobs released 2023-03-01 to 2023-03-29, "
        f"{st.n_slots} hourly slots, example fleet.",
        "",
        "| how | wall s | metrics identical to serial |",
        "|---|---|---|",
        f"| one process, one after another | {res[1][0]:.1f} | - |",
        f"| spawn process pool, 2 workers | {res[2][0]:.1f} | {'yes' if same else 'NO'} |",
        "",
        f"Pool / serial wall: {res[2][0] / res[1][0]:.2f}. Heuristic policies take seconds, so "
        "a pool's start-up (spawned interpreters, pickled inputs) and the forecasts each "
        "process issues again (in one process the policies share the replay source's memo) "
        "can outweigh the second core on this shared machine; the pool pays off for MILP "
        "policies (section 7 runs its six MILP replays in it).",
        "",
    ]
    tasks = make_tasks(
        [str(ROOT / "data" / "example" / "fleet.toml")],
        ["+8h", "+24h"],
        ["shutdown-idle", "lets-wait-awhile:perfect=1", "carbon-time:perfect=1"],
        start=datetime(2023, 3, 1, tzinfo=UTC),
        end=datetime(2023, 3, 8, tzinfo=UTC),
        carbon=str(EM),
        jobs=str(DATA / "traces" / "gaia_pai-100k.csv"),
        drain_h=48.0,
    )
    sw = {}
    for kind, kw in (
        ("serial", {}),
        ("process pool(2)", {"workers": 2}),
        ("dask LocalCluster(2)", {"dask_local": 2}),
    ):
        t0 = time.perf_counter()
        try:
            r = run_sweep(tasks, **kw)
            sw[kind] = (time.perf_counter() - t0, r.rows)
        except Exception as exc:  # dask missing: say so
            sw[kind] = (float("nan"), f"{type(exc).__name__}: {exc}")
    out += [
        f"Sweep: 1 config x slack (+8h, +24h) x 4 policies = {len(tasks)} one-week replays "
        "(2023-03-01 to 03-08, 48 h drain), read from the files by each worker.",
        "",
        "| executor | wall s | table identical to serial |",
        "|---|---|---|",
    ]
    for kind, (wall, rows_) in sw.items():
        ok = (
            "-" if kind == "serial" else ("yes" if rows_ == sw["serial"][1] else f"NO {rows_}"[:80])
        )
        out.append(f"| {kind} | {wall:.1f} | {ok} |")
    out.append("")
    return out


def milp_speed_section() -> list[str]:
    fleet, jobs, fc, perfect, st = _example_replay(1.0, drain_h=0.0)
    out = [
        "### 9. Where a MILP step's time goes",
        "",
        f"{len(jobs)} jobs released 2023-03-01, example fleet, the controller step every hourly "
        f"slot ({st.n_slots} slots, 48-slot horizon), forecasts issued at the time. Wall and "
        "CPU seconds of this process (the machine is shared: CPU s is the steadier figure). "
        "`baselines=1` is the controller's full plan (it also computes the three report "
        "baselines every step); the default `baselines=0` skips them in the replay — the same "
        "decisions (tests/whatif/test_whatif_milp.py checks it).",
        "",
        "| policy | wall s per slot | CPU s per slot | observe | forecast | optimize | reconcile | act | record | year extrapolated (CPU) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for pol in ("milp:time_limit_s=20,baselines=1", "milp:time_limit_s=20"):
        t0, c0 = time.perf_counter(), time.process_time()
        run = run_replay(fleet, jobs, pol, forecasts=fc, actuals=perfect, settings=st)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        steps = run.extra["steps"]
        ph = {
            k: float(np.mean([s["phase_s"].get(k, 0.0) for s in steps]))
            for k in ("observe", "forecast", "optimize", "reconcile", "act", "record")
        }
        per_cpu = cpu / st.n_slots
        out.append(
            f"| `{pol}` | {wall / st.n_slots:.2f} | {per_cpu:.2f} | "
            + " | ".join(f"{v:.3f}" for v in ph.values())
            + f" | {per_cpu * 8760 / 60:.0f} min |"
        )
    out += [
        "",
        "Phase columns: mean wall s per step from the controller's own `phase_s`. The year "
        "column is CPU s per slot × 8760 (**extrapolated**, not a measured year; the issue's "
        "target is ≤ 15 min).",
        "",
    ]
    return out


#: section 10's windows: one day of jobs released from each start, drained for 60 h after it
CANDIDATE_WINDOWS = ("2023-03-01", "2023-06-01", "2023-10-02")


def _example_copy_with(tmp: Path, controller_lines: str) -> Path:
    """data/example copied into ``tmp`` with ``[controller]`` lines (';'-separated) added."""
    import shutil

    d = tmp / "example"
    shutil.copytree(ROOT / "data" / "example", d)
    p = d / "fleet.toml"
    if controller_lines:
        lines = "\n".join(x.strip() for x in controller_lines.split(";") if x.strip())
        p.write_text(p.read_text().replace("[carbon]", f"[controller]\n{lines}\n\n[carbon]", 1))
    return p


def candidates_section() -> list[str]:
    """The MILP policy with and without the control step's extra candidates
    (``[controller] candidates``), side by side on the same replays."""
    import tempfile

    from greencpn.whatif.metrics import summarise

    pair = (("default", ""), ("`candidates = false`", "candidates = false"))
    # the last window also with the node-flap stability weight lowered (default 0.5)
    more = (
        *pair,
        ("`node_flap_weight = 0.05`", "node_flap_weight = 0.05"),
        ("`node_flap_weight = 0`", "node_flap_weight = 0"),
    )
    last = CANDIDATE_WINDOWS[-1]
    runs = [
        (day, "milp:time_limit_s=20", more if day == last else pair) for day in CANDIDATE_WINDOWS
    ]
    runs.append((last, "milp:perfect=1,time_limit_s=20", more))  # the oracle's runs
    rows = []
    for day, policy, variants in runs:
        start = datetime.fromisoformat(day).replace(tzinfo=UTC)
        for label, lines in variants:
            with tempfile.TemporaryDirectory() as tmp:
                fleet, jobs, fc, perfect, st = _example_replay(
                    1.0, drain_h=60.0, start=start, config=_example_copy_with(Path(tmp), lines)
                )
                load = os.getloadavg()[0]
                t0, c0 = time.perf_counter(), time.process_time()
                run = run_replay(fleet, jobs, policy, forecasts=fc, actuals=perfect, settings=st)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            m = summarise(run)
            rows.append((day, policy, label, len(jobs), st.n_slots, wall, cpu, load, m))
    out = [
        "### 10. The MILP policy without the step's extra candidates",
        "",
        "The example fleet, one day of GAIA/PAI jobs (deadline +24 h) released from each start "
        "date, replayed with the controller step every hourly slot (48-slot horizon, forecasts "
        "issued at the time, `milp:time_limit_s=20`; the last window also with perfect "
        "forecasts) and 60 h accounted after the last release "
        "(the unfinished column says whether every job finished). `default` "
        "= the step as shipped: the MILP-guided and kept placements compete with the per-job "
        "cap-level placements and the carbon-aware greedy and FIFO schedules, each scored by "
        "its objective and stability cost over the horizon; `candidates = false` = `[controller] "
        "candidates = false` in the fleet config (the MILP-guided and kept placements only). "
        "Each pair ran one after the other in one process; CPU s per slot is this process's.",
        "",
        "| released | policy | variant | jobs | slots | CPU s per slot | wall s per slot | load | carbon kg | carbon / default's | mean / p95 wait h | deadline misses | unfinished jobs (GPU-h) | cycles/node mean (max) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    base: dict[tuple[str, str], float] = {}
    for day, policy, label, nj, ns, wall, cpu, load, m in rows:
        if label == "default":
            base[day, policy] = m["carbon_kg"]
        out.append(
            f"| {day} | `{policy}` | {label} | {nj} | {ns} | {cpu / ns:.2f} | {wall / ns:.2f} | "
            f"{load:.1f} | {m['carbon_kg']:,.1f} | {m['carbon_kg'] / base[day, policy]:.3f} | "
            f"{m['mean_wait_h']:.1f} / {m['p95_wait_h']:.1f} | {m['deadline_misses']} | "
            f"{m['unfinished_jobs']} ({m['unfinished_gpu_h']:.1f}) | "
            f"{m['power_cycles_per_node_mean']:.2f} ({m['power_cycles_per_node_max']}) |"
        )
    unfinished = sum(r[-1]["unfinished_jobs"] for r in rows)
    out += [
        "",
        f"Unfinished jobs at the end, all runs: {unfinished} (a run with unfinished work "
        "has not paid for it: compare its carbon with care). `carbon / default's` = the run's "
        "carbon ÷ the default step's carbon on the same jobs with the same policy. The last "
        "pair is the perfect-foresight oracle (`perfect=1`: the step sees actual intensities).",
        "",
    ]
    return out


def _old_sections() -> dict[int, list[str]]:
    """Sections of the current results file by number (kept when not re-measured)."""
    if not OUT.is_file():
        return {}
    out: dict[int, list[str]] = {}
    cur: int | None = None
    for line in OUT.read_text().splitlines():
        m = re.match(r"### (\d+)\. ", line)
        if m:
            cur = int(m.group(1))
            out[cur] = []
        if cur is not None:
            out[cur].append(line)
    for v in out.values():
        while v and not v[-1].strip():  # one blank line after a kept section, not one more per run
            v.pop()
        v.append("")
        v.append("")
    return out


def main() -> None:
    if not DATA.is_dir():
        print(f"real data not found at {DATA}; nothing measured")
        return
    t0 = time.perf_counter()
    parts = (
        forecasts_section,
        watttime_section,
        lwa_section,
        philly_section,
        speed_section,
        milp_section,
        attribution_section,
        parallel_section,
        milp_speed_section,
        candidates_section,
    )
    wanted = {int(a) for a in sys.argv[1:]} or set(range(1, len(parts) + 1))
    old = _old_sections()
    body = []
    for k, part in enumerate(parts, start=1):
        if k not in wanted and k in old:
            body += old[k]
            continue
        t = time.perf_counter()
        body += part()
        print(f"{part.__name__}: {time.perf_counter() - t:.1f} s", flush=True)
    head = [
        "## What-if replay",
        "",
        f"Measured by `bench/bench_whatif.py` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: "
        f"{os.cpu_count()} CPUs (nproc), {platform.machine()}, Python {platform.python_version()}, "
        f"numpy {np.__version__}, pandas {pd.__version__}; sections {sorted(wanted)} measured "
        f"in this run ({(time.perf_counter() - t0) / 60:.1f} min, machine shared with other "
        "jobs), the others kept from the previous run.",
        "",
    ]
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(head + body).rstrip() + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
