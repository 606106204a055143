"""PNG plots of a plan (``greencpn.plan/1`` dict, see docs/plan-schema.md).

matplotlib is imported inside the functions (Agg backend), so ``import greencpn`` stays light
and needs no display. Each function writes one PNG and returns its path.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

DPI = 110
WIDE = (11.0, 5.2)

# file name -> (title used as alt text, function name); the order is the report's order
PLOTS: dict[str, str] = {
    "carbon_load.png": "Carbon intensity per site and the planned load",
    "nodes_on.png": "Nodes powered on per pool",
    "power_caps.png": "GPU power cap per pool",
    "site_power.png": "Meter power per site against its budget",
    "work_by_site.png": "Work per site and hour: plan against carbon-agnostic",
    "cumulative_carbon.png": "Cumulative carbon over the horizon: plan and baselines",
}
#: plots drawn only when the plan carries their data (plans written before they existed)
NEEDS = {"work_by_site.png": "work_by_site_gpu_h", "cumulative_carbon.png": "carbon_by_slot_kg"}


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _parse_utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def slot_edges(plan: dict[str, Any]) -> list[datetime]:
    """Slot start times plus the end of the last slot (for step plots)."""
    hz = plan["horizon"]
    starts = [_parse_utc(s) for s in hz["slot_starts"]]
    if not starts:
        starts = [_parse_utc(hz["start"])]
    return [*starts, starts[-1] + timedelta(minutes=int(hz["slot_minutes"]))]


def _series(slots: list[dict[str, Any]], key: str, n: int) -> list[float]:
    """Values of ``key`` by slot index (missing slots/values → NaN), then the last repeated."""
    vals = [float("nan")] * n
    for s in slots:
        i = int(s["slot"])
        v = s.get(key)
        if 0 <= i < n and v is not None:
            vals[i] = float(v)
    return [*vals, vals[-1] if vals else float("nan")]


def _finish_time_axis(ax: Any, edges: list[datetime]) -> None:
    import matplotlib.dates as mdates

    ax.set_xlim(edges[0], edges[-1])
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%d %b\n%H:%M", tz=edges[0].tzinfo))
    ax.grid(True, alpha=0.3)


def _grid(plt: Any, n: int, title: str) -> tuple[Any, list[Any]]:
    """Small multiples, two per row. Margins are fixed in inches: ``tight_layout`` cost a
    third of the rendering time on 8 subplots and is not needed for this fixed layout."""
    ncols = 2 if n > 1 else 1
    nrows = (n + ncols - 1) // ncols
    panel_h, top_in, bottom_in = 2.5, 0.75, 0.75
    height = nrows * panel_h + top_in + bottom_in
    fig, axes = plt.subplots(nrows, ncols, figsize=(11.0, height), sharex=True, squeeze=False)
    fig.subplots_adjust(
        left=0.07,
        right=0.98,
        top=1 - top_in / height,
        bottom=bottom_in / height,
        hspace=0.35,
        wspace=0.15,
    )
    fig.suptitle(title, y=1 - 0.25 / height)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def plot_carbon_load(plan: dict[str, Any], path: Path) -> Path:
    """(a) Carbon intensity per site (left axis) with the site's planned IT power (right axis)."""
    plt = _pyplot()
    edges = slot_edges(plan)
    n = len(edges) - 1
    fig, ax = plt.subplots(figsize=WIDE)
    ax2 = ax.twinx()
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, site in enumerate(plan["sites"]):
        c = colours[k % len(colours)]
        label = f"{site['name']} ({site.get('zone', '?')})"
        ax.step(
            edges,
            _series(site["slots"], "intensity_g_per_kwh", n),
            where="post",
            color=c,
            lw=2,
            label=f"{label} intensity",
        )
        ax2.step(
            edges,
            _series(site["slots"], "it_power_kw", n),
            where="post",
            color=c,
            lw=1.2,
            ls="--",
            alpha=0.8,
            label=f"{label} IT load",
        )
    ax.set_ylabel("carbon intensity (gCO2e/kWh)")
    ax2.set_ylabel("planned IT power (kW), dashed")
    ax.set_xlabel("time (UTC)")
    ax.set_ylim(bottom=0)
    ax2.set_ylim(bottom=0)
    ax.set_title("Carbon intensity per site (solid) and planned load (dashed)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(
        h1 + h2,
        l1 + l2,
        fontsize=7,
        ncol=4,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.2),
        frameon=False,
    )
    _finish_time_axis(ax, edges)
    fig.subplots_adjust(left=0.07, right=0.92, top=0.92, bottom=0.27)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


MAX_POOL_PANELS = 12
"""Above this many pools, per-pool plots draw one panel per site with a line per pool (40
panels cost seconds to render and are unreadable)."""


def _by_site(plan: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for pool in plan["pools"]:
        out.setdefault(pool["site"], []).append(pool)
    return out


def _per_site_lines(
    plan: dict[str, Any],
    path: Path,
    title: str,
    ylabel: str,
    key: str,
    share_of_pool: bool = False,
) -> Path:
    """One panel per site, one line per pool of ``key`` (as % of the pool's nodes if asked)."""
    plt = _pyplot()
    edges = slot_edges(plan)
    n = len(edges) - 1
    groups = _by_site(plan)
    fig, axes = _grid(plt, len(groups), title)
    for ax, (site, pools) in zip(axes, groups.items(), strict=True):
        for pool in pools:
            vals = _series(pool["slots"], key, n)
            if share_of_pool:
                vals = [100.0 * v / pool["nodes"] for v in vals]
            ax.step(edges, vals, where="post", lw=1.3, label=pool["name"])
        ax.set_title(f"{site} ({len(pools)} pools)", fontsize=9)
        ax.set_ylabel(ylabel)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=6, loc="best", framealpha=0.85, ncol=2)
        _finish_time_axis(ax, edges)
    return _save_grid(plt, fig, axes, path)


def _save_grid(plt: Any, fig: Any, axes: list[Any], path: Path) -> Path:
    """Label the bottom row's time axis, write the PNG and free the figure."""
    for ax in axes[-2:]:
        ax.set_xlabel("time (UTC)")
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_nodes_on(plan: dict[str, Any], path: Path) -> Path:
    """(b) Nodes on per pool (step) against the pool size and its spares."""
    if len(plan["pools"]) > MAX_POOL_PANELS:
        return _per_site_lines(
            plan,
            path,
            "Share of nodes powered on per pool",
            "nodes on (%)",
            "nodes_on",
            share_of_pool=True,
        )
    plt = _pyplot()
    edges = slot_edges(plan)
    n = len(edges) - 1
    pools = plan["pools"]
    fig, axes = _grid(plt, len(pools), "Nodes powered on per pool")
    for ax, pool in zip(axes, pools, strict=True):
        ax.step(edges, _series(pool["slots"], "nodes_on", n), where="post", lw=2, label="nodes on")
        ax.axhline(pool["nodes"], color="k", ls="--", lw=1, label=f"pool size ({pool['nodes']})")
        if pool.get("spares"):
            ax.axhline(
                pool["spares"], color="grey", ls=":", lw=1, label=f"spares ({pool['spares']})"
            )
        ax.set_ylim(0, pool["nodes"] * 1.08 + 0.5)
        ax.set_title(f"{pool['name']} @ {pool['site']} - {pool.get('gpu_model', '')}", fontsize=9)
        ax.set_ylabel("nodes")
        ax.legend(fontsize=7, loc="best", framealpha=0.85)
        _finish_time_axis(ax, edges)
    return _save_grid(plt, fig, axes, path)


def plot_power_caps(plan: dict[str, Any], path: Path) -> Path:
    """(c) GPU power cap per pool (W), with the device's min and max limits."""
    if len(plan["pools"]) > MAX_POOL_PANELS:
        return _per_site_lines(plan, path, "GPU power cap per pool", "cap (W)", "power_cap_w")
    plt = _pyplot()
    edges = slot_edges(plan)
    n = len(edges) - 1
    pools = plan["pools"]
    fig, axes = _grid(plt, len(pools), "GPU power cap per pool")
    for ax, pool in zip(axes, pools, strict=True):
        ax.step(
            edges,
            _series(pool["slots"], "power_cap_w", n),
            where="post",
            lw=2,
            color="tab:orange",
            label="power cap",
        )
        hi = pool.get("power_limit_max_w")
        lo = pool.get("power_limit_min_w")
        if hi:
            ax.axhline(hi, color="k", ls="--", lw=1, label=f"device max ({hi:g} W)")
        if lo:
            ax.axhline(lo, color="grey", ls=":", lw=1, label=f"device min ({lo:g} W)")
        ax.set_ylim(0, (hi or 1) * 1.1)
        ax.set_title(f"{pool['name']} - {pool.get('gpu_model', '')}", fontsize=9)
        ax.set_ylabel("cap (W)")
        ax.legend(fontsize=7, loc="best", framealpha=0.85)
        _finish_time_axis(ax, edges)
    return _save_grid(plt, fig, axes, path)


def plot_site_power(plan: dict[str, Any], path: Path) -> Path:
    """(d) Meter power (IT × PUE) per site against the site's budget."""
    plt = _pyplot()
    edges = slot_edges(plan)
    n = len(edges) - 1
    sites = plan["sites"]
    fig, axes = _grid(plt, len(sites), "Meter power per site against its budget")
    for ax, site in zip(axes, sites, strict=True):
        meter = _series(site["slots"], "meter_power_kw", n)
        ax.step(edges, meter, where="post", lw=2, label="meter power (IT × PUE)")
        budget = _series(site["slots"], "budget_kw", n)
        finite = [b for b in budget if b == b]
        if finite:
            ax.step(edges, budget, where="post", color="tab:red", ls="--", lw=1.3, label="budget")
        top = max([v for v in meter + finite if v == v] or [1.0])
        ax.set_ylim(0, top * 1.12)
        ax.set_title(
            f"{site['name']} ({site.get('zone', '?')}, PUE {site.get('pue', '?')})", fontsize=9
        )
        ax.set_ylabel("power (kW)")
        ax.legend(fontsize=7, loc="best", framealpha=0.85)
        _finish_time_axis(ax, edges)
    return _save_grid(plt, fig, axes, path)


def plot_work_by_site(plan: dict[str, Any], path: Path) -> Path:
    """(e) Busy GPU-hours per site and slot: the plan against the carbon-agnostic baseline
    (where and when work moved)."""
    plt = _pyplot()
    edges = slot_edges(plan)
    slot_h = float(plan["horizon"]["slot_minutes"]) / 60.0
    work = plan["work_by_site_gpu_h"]
    names = list(work.get("plan", {}))
    fig, axes = _grid(plt, len(names), "Work per site (busy GPUs): plan against carbon-agnostic")
    for ax, name in zip(axes, names, strict=True):
        for key, style in (("plan", dict(lw=2)), ("carbon_agnostic", dict(lw=1.3, ls="--"))):
            vals = [v / slot_h for v in work.get(key, {}).get(name, [])]
            if vals:
                ax.step(
                    edges, [*vals, vals[-1]], where="post", label=key.replace("_", "-"), **style
                )
        ax.set_title(name, fontsize=9)
        ax.set_ylabel("busy GPUs (GPU-h per h)")
        ax.legend(fontsize=7, loc="best", framealpha=0.85)
        _finish_time_axis(ax, edges)
    return _save_grid(plt, fig, axes, path)


def plot_cumulative_carbon(plan: dict[str, Any], path: Path) -> Path:
    """(f) Cumulative kg CO2e over the horizon (in-horizon energy) for the plan and baselines."""
    plt = _pyplot()
    edges = slot_edges(plan)
    fig, ax = plt.subplots(figsize=WIDE)
    for key, vals in plan["carbon_by_slot_kg"].items():
        cum, run = [0.0], 0.0
        for v in vals:
            run += float(v)
            cum.append(run)
        ax.plot(
            edges[: len(cum)], cum, lw=2.2 if key == "plan" else 1.3, label=key.replace("_", "-")
        )
    ax.set_ylabel("cumulative carbon (kg CO2e, inside the horizon)")
    ax.set_title("Cumulative carbon over the horizon")
    ax.legend(fontsize=8, loc="upper left")
    _finish_time_axis(ax, edges)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


_FUNCS = {
    "carbon_load.png": plot_carbon_load,
    "nodes_on.png": plot_nodes_on,
    "power_caps.png": plot_power_caps,
    "site_power.png": plot_site_power,
    "work_by_site.png": plot_work_by_site,
    "cumulative_carbon.png": plot_cumulative_carbon,
}


def make_plots(plan: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write every plot into ``out_dir``; returns ``{file name: path}`` in report order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return {
        name: _FUNCS[name](plan, out_dir / name)
        for name in PLOTS
        if name not in NEEDS or plan.get(NEEDS[name])
    }
