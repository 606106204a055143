"""Self-contained HTML report of a what-if run (``whatif.html``): the comparison table and
plots embedded as PNG data URIs — cumulative carbon by policy, saving by month, carbon versus
wait, the lever attribution, one week's energy per site. No external file, font or script.

Every label says what it is: carbon is kg CO2e at the *actual* intensity; a saving names its
denominator (the carbon-agnostic run's carbon over the same slots); the perfect-foresight oracle
is called so; an attribution bar names its reference run (``levers=none``).
matplotlib is imported inside the functions (Agg backend).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from greencpn.whatif.engine import RunResult

DPI = 100
WIDE = (10.5, 4.6)

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:72rem;margin:1.5rem auto;
padding:0 1rem;color:#1b1b1b;line-height:1.45}
h1{font-size:1.5rem}h2{font-size:1.2rem;margin-top:1.8rem;border-bottom:1px solid #cfd8dc}
table{border-collapse:collapse;margin:.6rem 0;font-size:.85rem}
th,td{border:1px solid #cfd8dc;padding:.25rem .5rem;vertical-align:top}
th{background:#eef3ee;text-align:left}td.num{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto;border:1px solid #e0e0e0}code{background:#f3f3f3;padding:0 .2rem}
p.note{color:#455a64;font-size:.9rem}
""".strip()

IMG_SCRIPT = """
(function(){
  function count(){
    var imgs=document.getElementsByTagName('img'), n=0;
    for(var i=0;i<imgs.length;i++){ if(imgs[i].complete && imgs[i].naturalWidth>0){ n++; } }
    document.body.setAttribute('data-images-total', String(imgs.length));
    document.body.setAttribute('data-images-loaded', String(n));
  }
  if(document.readyState==='complete'){ count(); } else { window.addEventListener('load', count); }
})();
""".strip()


def display_name(policy: str, oracle: str | None) -> str:
    """Legend name: the oracle and any other perfect-foresight run say so."""
    if policy == oracle and "perfect=1" in policy:
        return f"{policy} (perfect-foresight oracle)"
    if policy == oracle:
        return f"{policy} (reference for the share of saving)"
    if "perfect=1" in policy:
        return f"{policy} (perfect foresight)"
    return policy


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def _times(run: RunResult) -> list[Any]:
    st = run.settings
    return [st.start + k * st.step for k in range(run.carbon_kg.shape[0])]


def plot_cumulative(runs: Sequence[RunResult], oracle: str | None) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=WIDE)
    for r in runs:
        ax.plot(_times(r), np.cumsum(r.carbon_kg.sum(axis=1)), label=display_name(r.policy, oracle))
    ax.set_title("Cumulative carbon by policy (kg CO2e, at the actual intensity of each slot)")
    ax.set_xlabel("time (UTC)")
    ax.set_ylabel("cumulative carbon, kg CO2e")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    return _png(fig)


def monthly_saving_pct(runs: Sequence[RunResult], baseline: str) -> dict[str, dict[str, float]]:
    """Per policy and month (UTC, of the slot): 100 × (baseline − run) / baseline carbon."""
    base = next(r for r in runs if r.policy == baseline)
    months = [t.strftime("%Y-%m") for t in _times(base)]
    keys = sorted(set(months))
    idx = {m: [i for i, x in enumerate(months) if x == m] for m in keys}
    b = base.carbon_kg.sum(axis=1)
    out: dict[str, dict[str, float]] = {}
    for r in runs:
        if r.policy == baseline:
            continue
        c = r.carbon_kg.sum(axis=1)
        out[r.policy] = {
            m: 100.0 * (b[ii].sum() - c[ii].sum()) / b[ii].sum() if b[ii].sum() else float("nan")
            for m, ii in idx.items()
        }
    return out


def plot_monthly(runs: Sequence[RunResult], baseline: str, oracle: str | None) -> bytes:
    plt = _plt()
    data = monthly_saving_pct(runs, baseline)
    fig, ax = plt.subplots(figsize=WIDE)
    months = sorted({m for d in data.values() for m in d})
    width = 0.8 / max(len(data), 1)
    for i, (pol, d) in enumerate(data.items()):
        xs = np.arange(len(months)) + i * width
        ax.bar(xs, [d.get(m, np.nan) for m in months], width, label=display_name(pol, oracle))
    ax.set_xticks(np.arange(len(months)) + 0.4 - width / 2, months)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_title(f"Carbon saved by month, % (denominator: {baseline}'s carbon in that month)")
    ax.set_ylabel(f"saved vs {baseline}, %")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def plot_tradeoff(rows: Sequence[dict[str, Any]], oracle: str | None) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8.0, 4.8))
    for r in rows:
        if r.get("carbon_saved_pct") is None:
            continue
        ax.scatter(r["mean_wait_h"], r["carbon_saved_pct"], s=40)
        ax.annotate(
            display_name(r["policy"], oracle),
            (r["mean_wait_h"], r["carbon_saved_pct"]),
            fontsize=7,
            xytext=(4, 3),
            textcoords="offset points",
        )
    ax.set_title("Carbon versus wait, one point per policy")
    ax.set_xlabel("mean wait, h (first start − release)")
    ax.set_ylabel("carbon saved, % (denominator: carbon-agnostic's carbon)")
    ax.grid(alpha=0.3)
    return _png(fig)


def plot_attribution(att: dict[str, Any]) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8.5, 4.6))
    names = [f"{r['lever']} alone" for r in att["levers"]] + ["sum of alone", "all levers"]
    vals = [r["alone_saving_kg"] for r in att["levers"]] + [
        att["sum_alone_kg"],
        att["all_saving_kg"],
    ]
    colors = ["#4c9a2a"] * len(att["levers"]) + ["#9e9e9e", "#1b5e20"]
    bars = ax.bar(names, vals, color=colors)
    for b, v in zip(bars, vals, strict=True):
        ax.annotate(
            f"{v:,.3g}",
            (b.get_x() + b.get_width() / 2, v),
            ha="center",
            fontsize=8,
            xytext=(0, 2),
            textcoords="offset points",
        )
    ax.axhline(0, color="k", lw=0.8)
    ax.set_title(f"Lever attribution: carbon saved, kg CO2e (reference: {att['reference']})")
    ax.set_ylabel(f"kg CO2e saved vs {att['reference']}")
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def plot_week(runs: Sequence[RunResult], oracle: str | None) -> bytes:
    """Meter energy per site and slot over the first week, one panel per policy."""
    plt = _plt()
    n = len(runs)
    fig, axes = plt.subplots(n, 1, figsize=(10.5, 1.9 * n + 0.8), sharex=True, squeeze=False)
    for ax, r in zip(axes[:, 0], runs, strict=True):
        st = r.settings
        k = min(r.energy_kwh.shape[0], int(timedelta(days=7) / st.step))
        t = _times(r)[:k]
        ax.stackplot(t, r.energy_kwh[:k].T, labels=r.sites, step="post")
        ax.set_title(display_name(r.policy, oracle), fontsize=9)
        ax.set_ylabel("kWh per slot")
    axes[0, 0].legend(fontsize=7, loc="upper right", ncol=len(runs[0].sites))
    axes[-1, 0].set_xlabel("time (UTC)")
    fig.suptitle("One week's schedule: meter energy per site and slot, kWh (IT × PUE)")
    fig.autofmt_xdate()
    return _png(fig)


def _fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    return str(v)


def render_html(
    runs: Sequence[RunResult],
    table: dict[str, Any],
    meta: dict[str, Any],
    attribution: dict[str, Any] | None = None,
) -> str:
    """The whole page (see the module docstring)."""
    oracle = table.get("oracle")
    baseline = table.get("baseline")
    images: list[tuple[str, str, bytes]] = [
        ("cumulative", "Cumulative carbon by policy", plot_cumulative(runs, oracle))
    ]
    if baseline:
        images.append(("monthly", "Carbon saved by month", plot_monthly(runs, baseline, oracle)))
        images.append(("tradeoff", "Carbon versus wait", plot_tradeoff(table["rows"], oracle)))
    if attribution is not None:
        images.append(("attribution", "Lever attribution", plot_attribution(attribution)))
    images.append(("week", "One week's schedule", plot_week(runs, oracle)))

    e = html.escape
    body = [
        "<h1>greencpn what-if replay</h1>",
        f"<p>Replay {e(str(meta.get('from')))} to {e(str(meta.get('to')))} (jobs released in "
        f"this window; energy accounted {e(str(meta.get('drain_h', '')))} h more), config "
        f"<code>{e(str(meta.get('config')))}</code>, jobs <code>{e(str(meta.get('jobs_file')))}"
        f"</code>, carbon <code>{e(str(meta.get('carbon')))}</code>. Carbon is priced at the "
        "actual intensity of each slot, whatever a policy was told.</p>",
        f"<p class='note'>Baseline (denominator of <em>saved %</em>): <code>{e(str(baseline))}"
        f"</code>. Share of the oracle's saving = (baseline − run) / (baseline − oracle) carbon, "
        f"oracle = <code>{e(str(oracle))}</code>"
        + (
            " (perfect foresight: sees the actual intensities)"
            if oracle and "perfect=1" in oracle
            else ""
        )
        + ".</p>",
        "<h2>Policies</h2>",
    ]
    cols = [
        ("policy", "policy"),
        ("energy_kwh", "energy kWh"),
        ("carbon_kg", "carbon kg CO2e"),
        ("carbon_saved_pct", "saved % (of baseline carbon)"),
        ("share_of_oracle_saving", "share of oracle's saving"),
        ("mean_wait_h", "mean wait h"),
        ("p95_wait_h", "p95 wait h"),
        ("deadline_misses", "deadline misses"),
        ("unfinished_jobs", "unfinished jobs"),
        ("power_cycles_per_node_mean", "power cycles per node (mean)"),
    ]
    head = "".join(f"<th>{e(h)}</th>" for _, h in cols)
    trs = []
    for r in table["rows"]:
        tds = []
        for k, _ in cols:
            v = r.get(k)
            if k == "policy":
                tds.append(f"<td>{e(display_name(str(v), oracle))}</td>")
            else:
                tds.append(f'<td class="num">{e(_fmt(v))}</td>')
        trs.append("<tr>" + "".join(tds) + "</tr>")
    body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(trs)}</tbody></table>")
    if attribution is not None:
        body.append("<h2>Lever attribution</h2>")
        body.append(
            f"<p class='note'>{e(attribution['method'])}. Reference run "
            f"<code>{e(attribution['reference'])}</code>: "
            f"{attribution['reference_carbon_kg']:,.3f} kg CO2e; all levers save "
            f"{attribution['all_saving_kg']:,.3f} kg; the alone savings add up to "
            f"{attribution['sum_alone_kg']:,.3f} kg (interaction "
            f"{attribution['interaction_kg']:+,.3f} kg).</p>"
        )
        head = (
            "<th>lever</th><th>saved alone, kg CO2e</th><th>saved alone, % of the "
            "reference's carbon</th><th>share of the all-lever saving</th>"
            "<th>lost without it (leave-one-out), kg</th>"
        )
        trs = [
            f"<tr><td>{e(r['lever'])}</td><td class='num'>{_fmt(r['alone_saving_kg'])}</td>"
            f"<td class='num'>{_fmt(r['alone_saving_pct_of_reference'], 2)}</td>"
            f"<td class='num'>{_fmt(r['alone_share_of_all_saving'])}</td>"
            f"<td class='num'>{_fmt(r['leave_one_out_saving_kg'])}</td></tr>"
            for r in attribution["levers"]
        ]
        body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(trs)}</tbody></table>")
    body.append("<h2>Plots</h2>")
    for key, alt, png in images:
        data = base64.b64encode(png).decode("ascii")
        body.append(
            f'<figure><img alt="{e(alt)}" data-plot="{key}" '
            f'src="data:image/png;base64,{data}"></figure>'
        )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>greencpn what-if replay</title>"
        f"<style>{CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + f"\n<script>{IMG_SCRIPT}</script>\n</body></html>\n"
    )


def write_report(
    runs: Sequence[RunResult],
    table: dict[str, Any],
    out_dir: Path,
    meta: dict[str, Any],
    attribution: dict[str, Any] | None = None,
) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "whatif.html"
    path.write_text(render_html(runs, table, meta, attribution), encoding="utf-8")
    return path
