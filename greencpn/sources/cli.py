"""``greencpn forecast``: print a zone's carbon-intensity forecast with its provenance.

Example::

    greencpn forecast --zone DE --source electricitymaps --hours 48
    greencpn forecast --zone GB --source ukgrid --hours 24 --json
    greencpn forecast --zone DE --source csv:carbon.csv --issued 2023-06-01T00:00Z --plot de.png

Heavy imports (pandas, requests, matplotlib) happen inside the command, so ``greencpn --help``
stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import greencpn.sources.load  # noqa: F401  (registers the .json jobs_file reader for every command)


def add_parser(subparsers: Any) -> None:
    """Register ``forecast`` on the main parser's subparsers."""
    p = subparsers.add_parser(
        "forecast",
        help="print a zone's carbon-intensity forecast with its provenance",
        description="Fetch (or serve from cache / fallback forecaster) a carbon-intensity "
        "forecast and print it with its provenance: source, issue time, stale "
        "age and fallback.",
    )
    p.add_argument(
        "--zone", required=True, help="zone: DE, GB, GB-13, CAISO_NORTH, or 'lat,lon' (API sources)"
    )
    p.add_argument(
        "--source",
        required=True,
        metavar="SOURCE",
        help="electricitymaps | watttime | ukgrid | csv:PATH",
    )
    p.add_argument("--hours", type=float, default=48.0, help="forecast horizon in hours (48)")
    p.add_argument(
        "--issued",
        metavar="ISO",
        default=None,
        help="issue time in UTC, e.g. 2023-05-02T19:55Z (default: now; for csv: "
        "just after the file's last point)",
    )
    p.add_argument(
        "--now",
        metavar="ISO",
        default=None,
        help="pretend the current time is this (replay; default: the system clock)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--plot", metavar="PNG", default=None, help="write a PNG plot of the series")
    p.add_argument(
        "--cache",
        metavar="PATH",
        default=None,
        help="cache file (default: $GREENCPN_CACHE_DIR/sources.sqlite or "
        "~/.cache/greencpn/sources.sqlite)",
    )
    p.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    p.add_argument("--base-url", default=None, help="API base URL (tests, proxies)")
    p.add_argument("--keys-file", default=None, help="TOML key file (mode 0600)")
    p.add_argument(
        "--accounting",
        choices=("lifecycle", "direct"),
        default="lifecycle",
        help="Electricity Maps / csv emission factors (lifecycle)",
    )
    p.add_argument(
        "--history",
        metavar="CSV",
        default=None,
        help="history file for the fallback forecaster (any greencpn carbon CSV)",
    )
    p.add_argument(
        "--budget",
        type=int,
        default=None,
        help="max API requests per UTC day for this source (default: unlimited)",
    )
    p.add_argument(
        "--max-gap-slots",
        type=int,
        default=0,
        metavar="N",
        help="csv sources and --history: interpolate gaps of up to N hourly slots, refuse longer "
        "ones (default 0, as `greencpn plan`'s [carbon] max_gap_slots)",
    )
    p.add_argument(
        "--best-window",
        metavar="DURATION",
        default=None,
        help="also print the greenest start for a job of this length (e.g. 4h, 90min, 1.5h, "
        "2d): its mean intensity, the saving against starting now and its uncertainty band",
    )
    p.add_argument(
        "--before",
        metavar="ISO",
        default=None,
        help="with --best-window: the job must end by this UTC time (default: the forecast's "
        "end; --hours is raised to reach it)",
    )
    p.add_argument(
        "--power-kw",
        type=float,
        default=None,
        help="with --best-window: the job's average power at the meter, kW, to state the "
        "saving in kg CO2e",
    )
    p.add_argument("--timeout", type=float, default=15.0, help="read timeout in seconds (15)")
    p.add_argument("--retries", type=int, default=3, help="attempts per request (3)")
    p.set_defaults(func=run_forecast)


def run_forecast(args: argparse.Namespace) -> int:
    from greencpn.clock import SimClock, SystemClock
    from greencpn.errors import ConfigError

    if args.hours <= 0:
        raise ConfigError("--hours must be positive", field="--hours", fix="e.g. --hours 48")
    if args.max_gap_slots < 0:
        raise ConfigError(
            "--max-gap-slots must be 0 or more", field="--max-gap-slots", fix="e.g. 0 or 2"
        )
    _check_files(args)
    args.window_s = parse_duration(args.best_window) if args.best_window else None
    args.before_ts = _parse_time_arg(args.before, "--before").timestamp() if args.before else None
    if args.window_s is None and (args.before or args.power_kw is not None):
        raise ConfigError(
            "--before and --power-kw go with --best-window",
            field="--best-window",
            fix="add e.g. --best-window 4h",
        )
    if args.power_kw is not None and not 0 < args.power_kw < 1e6:
        raise ConfigError(
            f"--power-kw {args.power_kw:g} is not a positive power in kW",
            field="--power-kw",
            fix="e.g. --power-kw 3.2",
        )
    clock: Any = SimClock(_parse_time_arg(args.now, "--now")) if args.now else SystemClock()
    if args.before_ts is not None:
        start = _parse_time_arg(args.issued, "--issued") if args.issued else clock.now()
        args.hours = max(args.hours, (args.before_ts - start.timestamp()) / 3600.0)
    if _fast_cached(args, clock):
        return 0
    from greencpn.sources.chain import open_chain
    from greencpn.sources.http import RetryPolicy

    issued: datetime | None = _parse_time_arg(args.issued, "--issued") if args.issued else None
    chain = open_chain(
        args.source,
        args.zone,
        clock=clock,
        use_cache=not args.no_cache,
        cache_path=args.cache,
        base_url=args.base_url,
        keys_file=args.keys_file,
        accounting=args.accounting,
        history_file=args.history,
        budget=args.budget,
        policy=RetryPolicy(max_attempts=max(1, args.retries), read_timeout_s=args.timeout),
    )
    if issued is None:
        end_time = getattr(chain.history_source, "end_time", None)
        issued = end_time() if chain.live is None and end_time is not None else clock.now()
    series = chain.forecast(args.zone, issued, timedelta(hours=args.hours))
    _print(plain_series(series), chain.errors, args.json, args)
    if args.plot:
        plot_series(series, Path(args.plot))
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0


def _check_files(args: argparse.Namespace) -> None:
    """Read the csv source / history file as ``greencpn plan`` does (gaps longer than
    ``--max-gap-slots`` hourly slots refused), so forecast and plan accept the same files."""
    paths = [args.source[4:]] if args.source.startswith("csv:") else []
    if args.history:
        paths.append(args.history)
    if not paths:
        return
    from greencpn.sources.files import read_carbon_file

    hour = timedelta(hours=1)
    for path in paths:
        read_carbon_file(
            path,
            zone=args.zone,
            accounting=args.accounting,
            slot=hour,
            max_gap=hour * args.max_gap_slots,
        )


# ---------------------------------------------------------------------------------- output
# Output works on a "plain" series — provenance dict + [(epoch_s, value, estimated)] — so a
# fresh cache hit can be printed with the standard library only (no pandas import).
SIGNALS = {"electricitymaps": "average", "watttime": "marginal", "ukgrid": "average"}


def plain_series(series: Any) -> dict[str, Any]:
    """A :class:`~greencpn.sources.base.CarbonSeries` as a plain dict."""
    values = series.intensity_g_per_kwh
    est = series.estimated
    t = (values.index.as_unit("ns").asi8 // 10**9).tolist()
    v = [None if x != x else float(x) for x in values.to_numpy(dtype=float)]
    e = [bool(x) for x in est.to_numpy()] if est is not None else [None] * len(t)
    return {
        "zone": series.zone,
        "source": series.source,
        "signal": series.signal,
        "accounting": series.accounting,
        "issued_at": series.issued_at.timestamp() if series.issued_at else None,
        "stale_age_s": series.stale_age_s,
        "fallback": series.fallback,
        "step_s": series.step.total_seconds() if series.step else None,
        "points": list(zip(t, v, e, strict=True)),
        "quantiles": {
            f"{q:g}": [None if x != x else float(x) for x in qs.reindex(values.index).to_numpy()]
            for q, qs in sorted(series.quantiles.items())
        },
    }


def provenance(plain: dict[str, Any]) -> dict[str, Any]:
    """The provenance fields of a plain series as JSON values."""
    return {
        "zone": plain["zone"],
        "source": plain["source"],
        "signal": plain["signal"],
        "accounting": plain["accounting"],
        "issued_at": _iso(plain["issued_at"]) if plain["issued_at"] is not None else None,
        "stale_age_s": (None if plain["stale_age_s"] is None else round(plain["stale_age_s"], 1)),
        "fallback": plain["fallback"],
        "step_s": plain["step_s"],
        "points": len(plain["points"]),
    }


def series_to_json(plain: dict[str, Any], errors: list[Exception]) -> dict[str, Any]:
    out = provenance(plain)
    out["errors"] = [f"{type(e).__name__}: {e}" for e in errors]
    points = []
    quant = plain.get("quantiles") or {}
    for i, (t, v, e) in enumerate(plain["points"]):
        point: dict[str, Any] = {
            "time": _iso(t),
            "intensity_g_per_kwh": None if v is None else round(v, 2),
        }
        if e is not None:
            point["estimated"] = e
        if quant:  # the bands the --plot draws, g/kWh
            point["quantiles"] = {
                q: None if vals[i] is None else round(vals[i], 2) for q, vals in quant.items()
            }
        points.append(point)
    out["points"] = points
    return out


def format_table(plain: dict[str, Any], errors: list[Exception]) -> str:
    p = provenance(plain)
    stale = "no" if p["stale_age_s"] is None else f"yes, data {p['stale_age_s']:.0f} s old"
    lines = [
        f"zone        {p['zone']}",
        f"source      {p['source']}  ({p['signal']}, {p['accounting']})",
        f"issued      {p['issued_at'] or '-'}",
        f"stale       {stale}",
        f"fallback    {p['fallback'] or 'none (live)'}",
        f"points      {p['points']} x {_step_text(p['step_s'])}",
    ]
    lines += [f"error       {type(e).__name__}: {e}" for e in errors]
    lines.append("")
    lines.append(f"{'time (UTC)':<20} {'g/kWh':>8}  est")
    for t, v, e in plain["points"]:
        val = "     nan" if v is None else f"{v:8.1f}"
        lines.append(f"{_iso(t, minutes=True):<20} {val}  {'*' if e else ''}")
    return "\n".join(lines)


def _print(
    plain: dict[str, Any],
    errors: list[Exception],
    as_json: bool,
    args: argparse.Namespace | None = None,
) -> None:
    best = None
    if args is not None and getattr(args, "window_s", None):
        best = best_window(
            plain,
            args.window_s,
            before_ts=args.before_ts,
            power_kw=args.power_kw,
        )
    if as_json:
        doc = series_to_json(plain, errors)
        if best is not None:
            doc["best_window"] = best
        print(json.dumps(doc, indent=1))
    else:
        print(format_table(plain, errors))
        if best is not None:
            print("")
            print(format_best_window(best))


# ---------------------------------------------------------------------------- best window
def parse_duration(text: str) -> float:
    """``4h``, ``90min``, ``1.5h``, ``2d``, ``30m``, ``01:30`` → seconds."""
    import re

    from greencpn.errors import ConfigError

    raw = text.strip().lower()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(d|h|min|m)", raw)
    hm = re.fullmatch(r"(\d+):([0-5]\d)", raw)
    if m:
        secs = float(m.group(1)) * {"d": 86400, "h": 3600, "min": 60, "m": 60}[m.group(2)]
    elif hm:
        secs = int(hm.group(1)) * 3600.0 + int(hm.group(2)) * 60.0
    else:
        raise ConfigError(
            f"{text!r} is not a duration",
            field="--best-window",
            fix="write e.g. 4h, 90min, 1.5h or 2d",
        )
    if secs <= 0:
        raise ConfigError(
            f"{text!r} is not a positive duration", field="--best-window", fix="e.g. 4h"
        )
    return secs


def best_window(
    plain: dict[str, Any],
    duration_s: float,
    *,
    before_ts: float | None = None,
    power_kw: float | None = None,
) -> dict[str, Any]:
    """The greenest start of a job of ``duration_s`` inside the forecast of ``plain``.

    Rule: the candidates are the forecast's slot starts from its first point on, whose
    window ``[start, start + duration)`` lies inside the forecast and ends by ``before_ts``.
    A window's intensity is the time-weighted mean over it (a partial last slot counts by its
    covered fraction). The best start has the lowest mean (the earliest on a tie); the saving
    is against the first candidate ("start now"). With quantile forecasts (the lowest and
    highest quantile, e.g. 0.1 and 0.9) the band is the saving if each of the two windows'
    means lay anywhere between its low- and high-quantile means: ``[now_lo − best_hi,
    now_hi − best_lo]`` (a wide, not a statistical, interval).

    Raises:
        ConfigError: no window of that length fits.
    """
    from greencpn.errors import ConfigError

    pts = plain["points"]
    step = plain.get("step_s") or (pts[1][0] - pts[0][0] if len(pts) > 1 else 3600.0)
    full, rest = divmod(duration_s, step)
    weights = [1.0] * int(full) + ([rest / step] if rest > 1e-9 else [])
    n = len(weights)
    end_ts = pts[-1][0] + step if pts else 0.0
    limit = min(end_ts, before_ts) if before_ts is not None else end_ts

    def mean(vals: list[float | None], i: int) -> float | None:
        win = [v for v in vals[i : i + n] if v is not None]
        if len(win) < n:
            return None
        total = 0.0
        for w, v in zip(weights, win, strict=True):
            total += w * float(v)
        return total / sum(weights)

    vals = [p[1] for p in pts]
    cands = [
        (i, m)
        for i in range(len(pts))
        if pts[i][0] + duration_s <= limit + 1e-6 and (m := mean(vals, i)) is not None
    ]
    if not cands:
        first = _iso(pts[0][0], minutes=True) if pts else "-"
        raise ConfigError(
            f"no {_dur_text(duration_s)} window fits between {first} and "
            f"{_iso(limit, minutes=True) if pts else '-'} in the forecast",
            field="--best-window",
            fix="shorten --best-window, move --before later, or raise --hours",
        )
    now_i, now_mean = cands[0]
    best_i, best_mean = min(cands, key=lambda c: (c[1], c[0]))
    saving = now_mean - best_mean
    out: dict[str, Any] = {
        "duration_h": round(duration_s / 3600.0, 4),
        "before": _iso(before_ts) if before_ts is not None else None,
        "candidates": len(cands),
        "start": _iso(pts[best_i][0]),
        "end": _iso(pts[best_i][0] + duration_s),
        "mean_g_per_kwh": round(best_mean, 2),
        "now_start": _iso(pts[now_i][0]),
        "now_mean_g_per_kwh": round(now_mean, 2),
        "saving_g_per_kwh": round(saving, 2),
        "saving_pct_vs_now": round(100.0 * saving / now_mean, 2) if now_mean > 0 else None,
        "band": None,
    }
    if power_kw is not None:
        kwh = power_kw * duration_s / 3600.0
        out["energy_kwh"] = round(kwh, 3)
        out["saving_kg"] = round(saving * kwh / 1000.0, 3)
    quant = plain.get("quantiles") or {}
    if len(quant) >= 2:
        keys = sorted(quant, key=float)
        lo_k, hi_k = keys[0], keys[-1]
        lo, hi = quant[lo_k], quant[hi_k]
        now_lo, now_hi, best_lo, best_hi = (
            mean(lo, now_i),
            mean(hi, now_i),
            mean(lo, best_i),
            mean(hi, best_i),
        )
        if None not in (now_lo, now_hi, best_lo, best_hi):
            assert now_lo is not None and now_hi is not None
            assert best_lo is not None and best_hi is not None
            out["band"] = {
                "quantiles": [float(lo_k), float(hi_k)],
                "best_mean_g_per_kwh": [round(best_lo, 2), round(best_hi, 2)],
                "now_mean_g_per_kwh": [round(now_lo, 2), round(now_hi, 2)],
                "saving_g_per_kwh": [round(now_lo - best_hi, 2), round(now_hi - best_lo, 2)],
            }
    return out


def _dur_text(secs: float) -> str:
    h = secs / 3600.0
    return f"{h:g} h" if h >= 1 else f"{secs / 60:g} min"


def format_best_window(b: dict[str, Any]) -> str:
    pct = "" if b["saving_pct_vs_now"] is None else f" ({b['saving_pct_vs_now']:.1f} % of it)"
    lines = [
        f"best window for a {_dur_text(b['duration_h'] * 3600)} job"
        + (f" ending by {b['before']}" if b["before"] else "")
        + f" ({b['candidates']} possible starts):",
        f"  start      {b['start']}  (ends {b['end']})",
        f"  mean       {b['mean_g_per_kwh']:.1f} g/kWh over the window",
        f"  start now  {b['now_start']}: {b['now_mean_g_per_kwh']:.1f} g/kWh",
        f"  saving     {b['saving_g_per_kwh']:.1f} g/kWh vs starting now{pct}",
    ]
    if "saving_kg" in b:
        lines.append(
            f"             {b['saving_kg']:.2f} kg CO2e for {b['energy_kwh']:.1f} kWh at the meter"
        )
    band = b["band"]
    if band is None:
        lines.append("  band       none: the source gives a point forecast only (no quantiles)")
    else:
        q_lo, q_hi = band["quantiles"]
        s_lo, s_hi = band["saving_g_per_kwh"]
        lines.append(
            f"  band       saving {s_lo:.1f} … {s_hi:.1f} g/kWh if each window's mean lies "
            f"between its q{q_lo:g} and q{q_hi:g} forecast"
        )
    return "\n".join(lines)


def _fast_cached(args: argparse.Namespace, clock: Any) -> bool:
    """Print a fresh cached forecast that covers the whole request, using only the standard
    library; False (nothing printed) when the full path is needed (no cache, stale, partial
    cover, csv source, --plot)."""
    name = args.source.split(":", 1)[0]
    if args.no_cache or args.plot or name not in SIGNALS:
        return False
    from greencpn.sources.cache import SeriesCache, default_cache_path

    path = Path(args.cache) if args.cache else default_cache_path()
    if not path.exists():
        return False
    issued = _parse_time_arg(args.issued, "--issued") if args.issued else clock.now()
    cache = SeriesCache(path, clock)
    try:
        got = cache.latest_raw(name, args.zone, SIGNALS[name], "forecast", covering=issued)
    finally:
        cache.close()
    if got is None or not got[2]:
        return False
    d = got[0]
    t, v, e = d["t"], d["v"], d["est"] or [None] * len(d["t"])
    if len(t) < 2:
        return False
    step = t[1] - t[0]
    t0, t1 = issued.timestamp(), issued.timestamp() + args.hours * 3600.0
    sel = [i for i, ts in enumerate(t) if t0 - step < ts < t1]
    if not sel:
        return False
    ts = [t[i] for i in sel]
    floor = t0 - (t0 % step)
    if (
        ts[0] > floor + step
        or ts[-1] + step < t1
        or any(v[i] is None for i in sel)
        or any(b - a != step for a, b in zip(ts, ts[1:], strict=False))
    ):
        return False  # partial: the chain extends it with the forecaster
    plain = {
        "zone": d["zone"],
        "source": d["source"],
        "signal": d["signal"],
        "accounting": d["accounting"],
        "issued_at": d["issued_at"],
        "stale_age_s": None,
        "fallback": None,
        "step_s": float(step),
        "points": [(t[i], v[i], e[i]) for i in sel],
        "quantiles": {
            f"{float(q):g}": [qv[i] for i in sel] for q, qv in (d.get("q") or {}).items()
        },
    }
    _print(plain, [], args.json, args)
    return True


def plot_series(series: Any, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = series.intensity_g_per_kwh
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.step(values.index, values.to_numpy(), where="post", label="intensity")
    if series.estimated is not None and series.estimated.any():
        e = values.where(series.estimated)
        ax.step(
            e.index, e.to_numpy(), where="post", color="tab:orange", label="estimated / forecaster"
        )
    for q, qs in sorted(series.quantiles.items()):
        ax.plot(qs.index, qs.to_numpy(), lw=0.7, ls="--", label=f"q{q:g}")
    title = f"{series.zone} — {series.source}"
    if series.fallback:
        title += f" (fallback: {series.fallback})"
    ax.set_title(title)
    ax.set_ylabel("g CO2e / kWh")
    ax.set_xlabel("UTC")
    ax.legend(loc="best", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _parse_time_arg(text: str, flag: str) -> datetime:
    """An ISO-8601 time with a zone (``2023-05-02T19:55Z``) → aware UTC datetime."""
    from datetime import UTC

    from greencpn.errors import ConfigError

    raw = text.strip()
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(raw)
    except ValueError:
        raise ConfigError(
            f"{text!r} is not an ISO-8601 time", field=flag, fix="write e.g. 2023-05-02T19:55Z"
        ) from None
    if dt.tzinfo is None:
        raise ConfigError(
            f"{text!r} has no timezone", field=flag, fix="add Z for UTC, e.g. 2023-05-02T19:55Z"
        ) from None
    return dt.astimezone(UTC)


def _iso(epoch_s: float, *, minutes: bool = False) -> str:
    from datetime import UTC

    fmt = "%Y-%m-%dT%H:%MZ" if minutes else "%Y-%m-%dT%H:%M:%SZ"
    return datetime.fromtimestamp(epoch_s, UTC).strftime(fmt)


def _step_text(step_s: float | None) -> str:
    if not step_s:
        return "-"
    return f"{step_s / 60:g} min" if step_s < 3600 else f"{step_s / 3600:g} h"
