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
    p.add_argument("--timeout", type=float, default=15.0, help="read timeout in seconds (15)")
    p.add_argument("--retries", type=int, default=3, help="attempts per request (3)")
    p.set_defaults(func=run_forecast)


def run_forecast(args: argparse.Namespace) -> int:
    from greencpn.clock import SimClock, SystemClock
    from greencpn.errors import ConfigError

    if args.hours <= 0:
        raise ConfigError("--hours must be positive", field="--hours", fix="e.g. --hours 48")
    clock: Any = SimClock(_parse_time_arg(args.now, "--now")) if args.now else SystemClock()
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
    _print(plain_series(series), chain.errors, args.json)
    if args.plot:
        plot_series(series, Path(args.plot))
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0


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
    for t, v, e in plain["points"]:
        point: dict[str, Any] = {
            "time": _iso(t),
            "intensity_g_per_kwh": None if v is None else round(v, 2),
        }
        if e is not None:
            point["estimated"] = e
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


def _print(plain: dict[str, Any], errors: list[Exception], as_json: bool) -> None:
    if as_json:
        print(json.dumps(series_to_json(plain, errors), indent=1))
    else:
        print(format_table(plain, errors))


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
    }
    _print(plain, [], args.json)
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
