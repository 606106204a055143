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

SOURCES = ("electricitymaps", "watttime", "ukgrid", "csv:PATH")


def add_parser(subparsers: Any) -> None:
    """Register ``forecast`` on the main parser's subparsers."""
    p = subparsers.add_parser(
        "forecast", help="print a zone's carbon-intensity forecast with its provenance",
        description="Fetch (or serve from cache / fallback forecaster) a carbon-intensity "
                    "forecast and print it with its provenance: source, issue time, stale "
                    "age and fallback.")
    p.add_argument("--zone", required=True,
                   help="zone: DE, GB, GB-13, CAISO_NORTH, or 'lat,lon' (API sources)")
    p.add_argument("--source", required=True, metavar="SOURCE",
                   help="electricitymaps | watttime | ukgrid | csv:PATH")
    p.add_argument("--hours", type=float, default=48.0, help="forecast horizon in hours (48)")
    p.add_argument("--issued", metavar="ISO", default=None,
                   help="issue time in UTC, e.g. 2023-05-02T19:55Z (default: now; for csv: "
                        "just after the file's last point)")
    p.add_argument("--now", metavar="ISO", default=None,
                   help="pretend the current time is this (replay; default: the system clock)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--plot", metavar="PNG", default=None, help="write a PNG plot of the series")
    p.add_argument("--cache", metavar="PATH", default=None,
                   help="cache file (default: $GREENCPN_CACHE_DIR/sources.sqlite or "
                        "~/.cache/greencpn/sources.sqlite)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the cache")
    p.add_argument("--base-url", default=None, help="API base URL (tests, proxies)")
    p.add_argument("--keys-file", default=None, help="TOML key file (mode 0600)")
    p.add_argument("--accounting", choices=("lifecycle", "direct"), default="lifecycle",
                   help="Electricity Maps / csv emission factors (lifecycle)")
    p.add_argument("--history", metavar="CSV", default=None,
                   help="history file for the fallback forecaster (any greencpn carbon CSV)")
    p.add_argument("--budget", type=int, default=None,
                   help="max API requests per UTC day for this source (default: unlimited)")
    p.add_argument("--timeout", type=float, default=15.0, help="read timeout in seconds (15)")
    p.add_argument("--retries", type=int, default=3, help="attempts per request (3)")
    p.set_defaults(func=run_forecast)


def run_forecast(args: argparse.Namespace) -> int:
    from greencpn.clock import SimClock, SystemClock
    from greencpn.errors import ConfigError
    from greencpn.sources.cache import SeriesCache, default_cache_path
    from greencpn.sources.chain import SourceChain
    from greencpn.sources.http import HttpClient, RetryPolicy
    from greencpn.sources.keys import KeyStore

    if args.hours <= 0:
        raise ConfigError("--hours must be positive", field="--hours", fix="e.g. --hours 48")
    clock: Any = (SimClock(_parse_time_arg(args.now, "--now")) if args.now
                  else SystemClock())
    policy = RetryPolicy(max_attempts=max(1, args.retries), read_timeout_s=args.timeout)
    source_arg: str = args.source
    name = source_arg.split(":", 1)[0]
    live: Any
    issued: datetime | None = (_parse_time_arg(args.issued, "--issued")
                               if args.issued else None)
    if name == "csv":
        path = source_arg.split(":", 1)[1] if ":" in source_arg else ""
        if not path:
            raise ConfigError("csv source needs a path", field="--source",
                              fix="write --source csv:PATH")
        live = CsvSource(Path(path), zone=args.zone, accounting=args.accounting)
        if issued is None:
            issued = live.end_time()
    else:
        http = HttpClient(name, policy, clock=clock)
        kw: dict[str, Any] = {"http": http, "clock": clock}
        if args.base_url:
            kw["base_url"] = args.base_url
        if name == "electricitymaps":
            from greencpn.sources.electricitymaps import ElectricityMapsSource

            keys = KeyStore.from_env(key_file=args.keys_file)
            keys.require("electricitymaps", "token")  # a user mistake: say so, exit 2
            live = ElectricityMapsSource(keys=keys, accounting=args.accounting, **kw)
        elif name == "watttime":
            from greencpn.sources.watttime import WattTimeSource

            keys = KeyStore.from_env(key_file=args.keys_file)
            keys.require("watttime", "username")
            keys.require("watttime", "password")
            live = WattTimeSource(keys=keys, **kw)
        elif name == "ukgrid":
            from greencpn.sources.ukgrid import UKGridSource

            live = UKGridSource(**kw)
        else:
            raise ConfigError(f"unknown source {source_arg!r}", field="--source",
                              fix=f"use one of {', '.join(SOURCES)}")
    cache = None
    if not args.no_cache and name != "csv":
        budget = {name: args.budget} if args.budget is not None else None
        cache = SeriesCache(args.cache or default_cache_path(), clock, daily_budget=budget)
    history = (CsvSource(Path(args.history), zone=args.zone, accounting=args.accounting)
               if args.history else None)
    if name == "csv":
        # A history file has no issued forecasts: the forecaster is the forecast.
        chain = SourceChain(None, None, clock=clock, history_source=live,
                            signal=live._load().signal, source_name=live.name)
    else:
        chain = SourceChain(live, cache, clock=clock, history_source=history,
                            source_name=live.name)
    series = chain.forecast(args.zone, issued or clock.now(), timedelta(hours=args.hours))
    if args.json:
        print(json.dumps(series_to_json(series, chain.errors), indent=1))
    else:
        print(format_table(series, chain.errors))
    if args.plot:
        plot_series(series, Path(args.plot))
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------ csv source
class CsvSource:
    """A carbon CSV as a source: history from the file, no issued forecasts (the chain's
    forecaster makes them). Uses :func:`greencpn.sources.files.read_carbon_file` when
    available, else a plain wide-CSV read."""

    step = timedelta(hours=1)

    def __init__(self, path: Path, *, zone: str, accounting: str = "lifecycle") -> None:
        self.path = path
        self.zone = zone
        self.accounting = accounting
        self.name = f"csv:{path}"
        self._series: Any = None

    def _load(self) -> Any:
        if self._series is None:
            try:
                from greencpn.sources.files import read_carbon_file
            except ImportError:
                self._series = _read_wide_plain(self.path, self.zone)
            else:
                self._series = read_carbon_file(self.path, zone=self.zone,
                                                accounting=self.accounting)  # type: ignore[arg-type]
            self.signal = self._series.signal
        return self._series

    def end_time(self) -> datetime:
        s = self._load()
        idx = s.intensity_g_per_kwh.index
        step = s.step or timedelta(hours=1)
        return (idx[-1] + step).to_pydatetime()

    def history(self, zone: str, start: datetime, end: datetime) -> Any:
        from dataclasses import replace

        import pandas as pd

        s = self._load()
        v = s.intensity_g_per_kwh
        v = v[(v.index >= pd.Timestamp(start)) & (v.index < pd.Timestamp(end))]
        est = s.estimated.loc[v.index] if s.estimated is not None else None
        return replace(s, intensity_g_per_kwh=v, estimated=est)

    def forecast(self, zone: str, issued_at: datetime, horizon: timedelta) -> Any:
        from greencpn.sources.http import BadResponseError

        raise BadResponseError(f"{self.name}: a history file holds no issued forecasts")


def _read_wide_plain(path: Path, zone: str) -> Any:
    import pandas as pd

    from greencpn.errors import ConfigError
    from greencpn.sources.base import CarbonSeries

    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise ConfigError("file not found", source=str(path), fix="check the path") from None
    if zone not in df.columns:
        raise ConfigError(f"zone {zone!r} not in the file", source=str(path), field="zone",
                          fix=f"pick one of {list(df.columns[1:])}")
    idx = pd.to_datetime(df.iloc[:, 0], utc=True)
    values = pd.Series(df[zone].to_numpy(dtype=float), index=pd.DatetimeIndex(idx),
                       name="intensity_g_per_kwh")
    return CarbonSeries(zone=zone, intensity_g_per_kwh=values, source=f"csv:{path}")


# ---------------------------------------------------------------------------------- output
def provenance(series: Any) -> dict[str, Any]:
    """The provenance fields of a series as plain JSON values."""
    return {
        "zone": series.zone,
        "source": series.source,
        "signal": series.signal,
        "accounting": series.accounting,
        "issued_at": _iso(series.issued_at) if series.issued_at else None,
        "stale_age_s": None if series.stale_age_s is None else round(series.stale_age_s, 1),
        "fallback": series.fallback,
        "step_s": series.step.total_seconds() if series.step else None,
        "points": int(len(series.intensity_g_per_kwh)),
    }


def series_to_json(series: Any, errors: list[Exception]) -> dict[str, Any]:
    values = series.intensity_g_per_kwh
    est = series.estimated
    points = []
    for i, (ts, v) in enumerate(values.items()):
        point: dict[str, Any] = {"time": _iso(ts),
                                 "intensity_g_per_kwh": None if v != v else round(float(v), 2)}
        if est is not None:
            point["estimated"] = bool(est.iloc[i])
        points.append(point)
    out = provenance(series)
    out["errors"] = [f"{type(e).__name__}: {e}" for e in errors]
    out["points"] = points
    return out


def format_table(series: Any, errors: list[Exception]) -> str:
    p = provenance(series)
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
    values = series.intensity_g_per_kwh
    est = series.estimated
    for i, (ts, v) in enumerate(values.items()):
        flag = "*" if est is not None and bool(est.iloc[i]) else ""
        val = "     nan" if v != v else f"{v:8.1f}"
        lines.append(f"{ts.strftime('%Y-%m-%dT%H:%MZ'):<20} {val}  {flag}")
    return "\n".join(lines)


def plot_series(series: Any, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = series.intensity_g_per_kwh
    fig, ax = plt.subplots(figsize=(9, 3.5))
    ax.step(values.index, values.to_numpy(), where="post", label="intensity")
    if series.estimated is not None and series.estimated.any():
        e = values.where(series.estimated)
        ax.step(e.index, e.to_numpy(), where="post", color="tab:orange",
                label="estimated / forecaster")
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
        raise ConfigError(f"{text!r} is not an ISO-8601 time", field=flag,
                          fix="write e.g. 2023-05-02T19:55Z") from None
    if dt.tzinfo is None:
        raise ConfigError(f"{text!r} has no timezone", field=flag,
                          fix="add Z for UTC, e.g. 2023-05-02T19:55Z") from None
    return dt.astimezone(UTC)


def _iso(ts: Any) -> str:
    import pandas as pd

    return pd.Timestamp(ts).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def _step_text(step_s: float | None) -> str:
    if not step_s:
        return "-"
    return f"{step_s / 60:g} min" if step_s < 3600 else f"{step_s / 3600:g} h"
