"""Node and GPU utilisation from Prometheus over its HTTP API (``/api/v1/query[_range]``).

Typical metrics: ``DCGM_FI_DEV_GPU_UTIL`` (NVIDIA DCGM exporter, % per GPU, labels ``Hostname``,
``gpu``), ``nvidia_smi_utilization_gpu_ratio`` (nvidia_gpu_exporter), or node-exporter CPU
counters. Results come back as pandas DataFrames with a UTC ``DatetimeIndex`` and one column per
series.

Errors are typed by what the caller should do:

* :class:`~greencpn.errors.TemporaryError` — connection refused, timeout, HTTP 5xx (503 with
  ``Retry-After`` sets ``retry_after_s``), a body that is not Prometheus JSON (proxy pages).
* :class:`~greencpn.errors.ConfigError` — HTTP 400 ``bad_data``: the PromQL or the parameters are
  wrong; the message carries Prometheus' own error text.
* :class:`~greencpn.errors.PermanentError` — 401/403/404 (wrong URL or credentials) and 422
  (the expression cannot be executed).

No retries happen here: the caller (daemon) retries on TemporaryError.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import requests

from greencpn.clock import ensure_utc
from greencpn.errors import ConfigError, PermanentError, TemporaryError

#: Prometheus refuses range queries with more points than this per series.
MAX_POINTS_PER_QUERY = 11_000


@dataclass(frozen=True)
class RangeResult:
    """A ``query_range`` answer.

    Attributes:
        frame: one column per series, UTC ``DatetimeIndex`` of evaluation times; NaN where a
            series has no sample.
        labels: column name → the series' full label set.
    """

    frame: pd.DataFrame
    labels: dict[str, dict[str, str]] = field(default_factory=dict)


def _series_name(metric: Mapping[str, str], label: str | None) -> str:
    if label is not None and label in metric:
        return str(metric[label])
    name = metric.get("__name__", "")
    rest = ",".join(f'{k}="{v}"' for k, v in sorted(metric.items()) if k != "__name__")
    return f"{name}{{{rest}}}" if rest or not name else name


def _to_seconds(step: float | timedelta) -> float:
    s = step.total_seconds() if isinstance(step, timedelta) else float(step)
    if not math.isfinite(s) or s <= 0:
        raise ConfigError(
            f"step {step!r} must be a positive number of seconds",
            field="step",
            fix="use e.g. 60 for one minute",
        )
    return s


class PrometheusClient:
    """A small client for Prometheus' HTTP API.

    Args:
        base_url: e.g. ``http://127.0.0.1:9090`` (a path prefix such as ``/prometheus`` is kept).
        connect_timeout_s: TCP connect timeout.
        read_timeout_s: read timeout per request; also sent as the query ``timeout``.
        session: a ``requests.Session`` (for auth headers or TLS settings).
    """

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 30.0,
        session: requests.Session | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"Prometheus URL {base_url!r} has no http:// or https://",
                field="prometheus.url",
                fix="write e.g. http://127.0.0.1:9090",
            )
        self.base_url = base_url.rstrip("/")
        self.timeout = (connect_timeout_s, read_timeout_s)
        self.session = session or requests.Session()

    # ------------------------------------------------------------------ transport

    def _get(self, path: str, params: Mapping[str, Any]) -> Any:
        url = f"{self.base_url}{path}"
        try:
            resp = self.session.get(url, params=dict(params), timeout=self.timeout)
        except requests.Timeout as exc:
            raise TemporaryError(f"Prometheus at {self.base_url} timed out: {exc}") from None
        except requests.ConnectionError as exc:
            raise TemporaryError(f"cannot reach Prometheus at {self.base_url}: {exc}") from None
        body: Any = None
        try:
            body = resp.json()
        except ValueError:
            body = None
        prom_error = ""
        if isinstance(body, Mapping) and body.get("status") == "error":
            prom_error = f"{body.get('errorType', 'error')}: {body.get('error', '')}"
        code = resp.status_code
        if code >= 500:
            retry = resp.headers.get("Retry-After")
            retry_s = float(retry) if retry and retry.replace(".", "", 1).isdigit() else None
            raise TemporaryError(
                f"Prometheus answered HTTP {code} {prom_error}".rstrip(), retry_after_s=retry_s
            )
        if code == 400:
            raise ConfigError(
                f"Prometheus refused the query: {prom_error or resp.text[:300]}",
                source=url,
                field="query",
                fix="check the PromQL expression and the start/end/step",
            )
        if code in (401, 403):
            raise PermanentError(
                f"Prometheus at {self.base_url} answered HTTP {code}: "
                "give credentials with a requests.Session that carries them"
            )
        if code == 404:
            raise PermanentError(
                f"{url} not found (HTTP 404): is {self.base_url} a Prometheus "
                "server (and its path prefix right)?"
            )
        if code == 422:
            raise PermanentError(f"Prometheus cannot execute the query: {prom_error}")
        if code != 200 or not isinstance(body, Mapping) or body.get("status") != "success":
            raise TemporaryError(f"unexpected answer from {url}: HTTP {code} {resp.text[:200]!r}")
        return body.get("data")

    # ------------------------------------------------------------------ queries

    def query(
        self, promql: str, at: datetime | None = None, *, label: str | None = None
    ) -> pd.Series:
        """Evaluate an instant query; one value per series.

        Args:
            promql: the expression.
            at: evaluation time (UTC); None = the server's now.
            label: name the series by this label's value (e.g. ``Hostname``) instead of the
                full label set.

        Returns:
            A float Series indexed by series name (empty when nothing matched); a scalar
            result is returned under the name ``scalar``.
        """
        params: dict[str, Any] = {"query": promql, "timeout": f"{self.timeout[1]:g}s"}
        if at is not None:
            params["time"] = f"{ensure_utc(at, 'at').timestamp():.3f}"
        data = self._get("/api/v1/query", params) or {}
        kind = data.get("resultType")
        result = data.get("result")
        if kind in ("scalar", "string") and isinstance(result, list):
            return pd.Series({"scalar": float(result[1])}, dtype=float)
        out: dict[str, float] = {}
        for item in result or []:
            out[_series_name(item.get("metric", {}), label)] = float(item["value"][1])
        return pd.Series(out, dtype=float)

    def query_range(
        self,
        promql: str,
        start: datetime,
        end: datetime,
        step: float | timedelta,
        *,
        label: str | None = None,
    ) -> RangeResult:
        """Evaluate a range query over ``[start, end]`` every ``step`` seconds.

        Longer ranges than Prometheus' 11,000-point limit are split into several requests and
        joined. Evaluation times are ``start + k × step``.

        Raises:
            ConfigError: end before start, bad step, or a query Prometheus refuses (400).
        """
        start = ensure_utc(start, "start")
        end = ensure_utc(end, "end")
        step_s = _to_seconds(step)
        if end < start:
            raise ConfigError(
                f"end {end.isoformat()} is before start {start.isoformat()}",
                field="end",
                fix="swap start and end",
            )
        columns: dict[str, dict[float, float]] = {}
        labels: dict[str, dict[str, str]] = {}
        t0 = start.timestamp()
        t_end = end.timestamp()
        chunk_s = step_s * (MAX_POINTS_PER_QUERY - 1)
        while t0 <= t_end:
            t1 = min(t0 + chunk_s, t_end)
            data = (
                self._get(
                    "/api/v1/query_range",
                    {
                        "query": promql,
                        "start": f"{t0:.3f}",
                        "end": f"{t1:.3f}",
                        "step": f"{step_s:g}s",
                        "timeout": f"{self.timeout[1]:g}s",
                    },
                )
                or {}
            )
            if data.get("resultType") not in (None, "matrix"):
                raise ConfigError(
                    f"query_range returned {data.get('resultType')}, not a matrix",
                    field="query",
                    fix="use an expression that yields a vector",
                )
            for item in data.get("result") or []:
                metric = item.get("metric", {})
                name = _series_name(metric, label)
                labels.setdefault(name, dict(metric))
                col = columns.setdefault(name, {})
                for ts, val in item.get("values") or []:
                    col[float(ts)] = float(val)
            n_steps = math.floor((t1 - t0) / step_s)
            t0 = t0 + (n_steps + 1) * step_s
        n = math.floor((t_end - start.timestamp()) / step_s) + 1
        grid = start.timestamp() + step_s * np.arange(n)
        index = pd.DatetimeIndex(pd.to_datetime(grid, unit="s", utc=True).round("ms"), name="time")
        frame = pd.DataFrame(index=index)
        for name, values in sorted(columns.items()):
            ser = pd.Series(values, dtype=float)
            ser.index = pd.to_datetime(ser.index.to_numpy(), unit="s", utc=True).round("ms")
            frame[name] = ser.reindex(index)
        return RangeResult(frame=frame, labels=labels)

    def ready(self) -> bool:
        """True when ``/-/ready`` answers 200 (never raises)."""
        try:
            return (
                self.session.get(f"{self.base_url}/-/ready", timeout=self.timeout).status_code
                == 200
            )
        except requests.RequestException:
            return False


# ----------------------------------------------------------------------------- helpers


def _host_matcher(hosts: Sequence[str] | None, host_label: str) -> str:
    if not hosts:
        return ""
    alt = "|".join(h.replace(".", r"\\.") for h in hosts)
    return f'{host_label}=~"{alt}"'


def gpu_utilisation(
    client: PrometheusClient,
    start: datetime,
    end: datetime,
    step: float | timedelta,
    *,
    metric: str = "DCGM_FI_DEV_GPU_UTIL",
    host_label: str = "Hostname",
    hosts: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Mean GPU utilisation (%, as the metric reports it) per node: one column per host."""
    sel = _host_matcher(hosts, host_label)
    q = f"avg by ({host_label}) ({metric}{{{sel}}})"
    return client.query_range(q, start, end, step, label=host_label).frame


def busy_gpus(
    client: PrometheusClient,
    start: datetime,
    end: datetime,
    step: float | timedelta,
    *,
    metric: str = "DCGM_FI_DEV_GPU_UTIL",
    threshold: float = 10.0,
    host_label: str = "Hostname",
    hosts: Sequence[str] | None = None,
) -> pd.Series:
    """Number of GPUs whose utilisation exceeds ``threshold`` at each step.

    0 where GPUs report but none is busy; NaN where no GPU reported at all (no data). This is
    the history a :mod:`greencpn.sources.load_forecast` model learns from.
    """
    sel = _host_matcher(hosts, host_label)
    series = f"{metric}{{{sel}}}"
    q = f"count({series} > {threshold:g}) or (count({series}) * 0)"
    frame = client.query_range(q, start, end, step).frame
    if frame.shape[1] == 0:
        return pd.Series(np.nan, index=frame.index, name="busy_gpus")
    return frame.iloc[:, 0].rename("busy_gpus")
