"""Fallback carbon-intensity forecasters: replace a missing API forecast or extend a short one.

Every forecaster follows :class:`Forecaster`: ``fit(history)`` hands it a regular, UTC-indexed
history (it *refits itself* from whatever it is given — nothing is trained once and frozen into
the package); ``predict(issued_at, horizon_slots, step)`` returns a :class:`CarbonSeries` whose
first slot is the slot containing ``issued_at``. A forecast issued at ``t`` only ever uses history
values of slots that ended by ``t`` (index ``< floor(t)``), and model parameters estimated from
values before the start of the refit period (00:00 UTC of ``t``'s day by default), whatever else
the history holds — so replaying history with one long series has no look-ahead.

Forecasters:

* :class:`Persistence` — the last known value for every lead.
* :class:`SeasonalNaive` — the same slot one period earlier (``period_slots=24``: yesterday,
  ``168``: last week), repeated for longer leads.
* :class:`SeasonalNaiveForecaster` — the source chain's last resort: same time yesterday, else
  persistence, on any history however short or irregular.
* :class:`ProfileForecaster` — the hourly profile of the last 7 days plus the current deviation
  from it, decaying with the lead (``exp(-lead/tau)``).
* :class:`LinearLagForecaster` (the default) — one ridge regression per lead (sharing one Gram
  matrix, solved with numpy) on the last 168 hourly lags, the 24-hour profile and 7 daily means of
  the last week (all relative to the last value), and hour-of-day / day-of-week one-hots; fitted on
  a rolling window (365 days) and refitted daily — incrementally when time moves forward.

Each forecast carries ``quantiles`` (default 0.1 / 0.5 / 0.9): the point forecast plus the
empirical quantiles of the model's own errors per lead over the last ``quantile_days`` before the
refit. ``fallback`` is left ``None``: the caller that uses a forecaster instead of a live source
sets ``fallback=f"forecaster:{name}"``. :func:`extend` lengthens a too-short API forecast.

Size (~770 lines, over the ~600 of issue 13, on purpose): the five forecasters share
:class:`_BaseForecaster`'s no-look-ahead history handling, refit schedule and per-lead error
quantiles, which are the delicate part; one module keeps that base and every model that relies
on its private state side by side (:class:`LinearLagForecaster`'s incremental Gram update alone
is ~230 lines).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from greencpn.errors import ConfigError
from greencpn.sources.base import Accounting, CarbonSeries, Signal

DEFAULT_LEVELS: tuple[float, ...] = (0.1, 0.5, 0.9)
HOUR = timedelta(hours=1)
_EYE24 = np.eye(24)
_EYE7 = np.eye(7)
_POOL: list[object] = []


def _one_blas_thread() -> contextlib.AbstractContextManager[object]:
    """Run BLAS on one thread: these matrices are small (230 x 230), and on a shared 2-core
    machine multi-threaded OpenBLAS measured 3-14x slower (bench/results/forecast.md)."""
    if not _POOL:
        try:
            from threadpoolctl import ThreadpoolController

            _POOL.append(ThreadpoolController())
        except Exception:  # optional: without it BLAS keeps its default threads
            _POOL.append(None)
    ctl = _POOL[0]
    if ctl is None:
        return contextlib.nullcontext()
    return ctl.limit(limits=1, user_api="blas")  # type: ignore[attr-defined]


@runtime_checkable
class Forecaster(Protocol):
    """A forecaster that refits itself from the history it is given (the one forecaster
    interface: :class:`~greencpn.sources.chain.SourceChain`, :func:`extend` and the replay
    source all take it)."""

    name: str

    def fit(self, history: pd.Series) -> object:
        """Take (and learn from) a regular, tz-aware UTC-indexed history in g/kWh (the return
        value is not used; :class:`SeasonalNaiveForecaster` returns itself for chaining)."""
        ...

    def predict(
        self, issued_at: datetime, horizon_slots: int, step: timedelta = HOUR
    ) -> CarbonSeries:
        """Forecast ``horizon_slots`` slots from the slot containing ``issued_at``."""
        ...


# --------------------------------------------------------------------------- common base
class _BaseForecaster:
    """History handling, slot arithmetic, quantiles and output shared by all forecasters.

    Subclasses implement :meth:`_points`: point forecasts for issue rows (indices into the
    history: row ``i`` may use values ``y[:i]`` only) and leads ``1..horizon``.
    """

    name = "base"

    def __init__(
        self,
        *,
        levels: Sequence[float] = DEFAULT_LEVELS,
        quantile_days: int = 28,
        refit_every: timedelta = timedelta(days=1),
    ) -> None:
        self.levels = tuple(sorted(float(q) for q in levels))
        self.quantile_days = quantile_days
        self.refit_every = refit_every
        self._y: np.ndarray | None = None
        self._t0: pd.Timestamp | None = None
        self._step: pd.Timedelta | None = None
        self.zone = "unknown"
        self.signal: Signal = "average"
        self.accounting: Accounting = "lifecycle"
        self.n_refits = 0
        self._qcache: dict[tuple[int, int, int], np.ndarray] = {}

    # -- history --------------------------------------------------------------------------
    def fit(self, history: pd.Series | CarbonSeries) -> None:
        """Store the history (ffilled internally; trailing/leading NaN trimmed) and invalidate.

        Raises:
            ConfigError: not a tz-aware, regular, non-empty series.
        """
        if isinstance(history, CarbonSeries):
            self.zone, self.signal, self.accounting = (
                history.zone,
                history.signal,
                history.accounting,
            )
            history = history.intensity_g_per_kwh
        elif history.name is not None:
            self.zone = str(history.name)
        idx = history.index
        if not isinstance(idx, pd.DatetimeIndex) or idx.tz is None:
            raise ConfigError(
                "forecaster history needs a tz-aware UTC DatetimeIndex",
                source=self.name,
                fix="read files with greencpn.sources.files",
            )
        vals = history.to_numpy(dtype=np.float64, na_value=np.nan)
        ok = np.flatnonzero(~np.isnan(vals))
        if len(ok) == 0:
            raise ConfigError(
                "forecaster history has no values",
                source=self.name,
                fix="give at least a few days of history",
            )
        vals = vals[ok[0] : ok[-1] + 1]
        idx = idx[ok[0] : ok[-1] + 1]
        if len(idx) >= 2:
            d = np.diff(idx.asi8)
            if not np.all(d == d[0]):
                raise ConfigError(
                    "forecaster history is not regular",
                    source=self.name,
                    fix="resample it first (greencpn.sources.resample)",
                )
            step = pd.Timedelta(int(d[0]), unit=idx.unit)
        else:
            step = pd.Timedelta(HOUR)
        y = pd.Series(vals).ffill().to_numpy()  # only past values fill a hole: no look-ahead
        t0 = idx[0].tz_convert("UTC")
        extends = (
            self._y is not None
            and self._t0 == t0
            and self._step == step
            and len(y) >= len(self._y)
            and np.array_equal(y[: len(self._y)], self._y, equal_nan=True)
        )
        self._y, self._t0, self._step = y, t0, step
        if not extends:  # an extension keeps the quantiles: they only use data before cutoffs
            self._qcache = {}
        self._on_new_history(extends)

    def extend_history(self, values: np.ndarray | Sequence[float]) -> None:
        """Append the values of the slots right after the current history (a replay moving
        its clock forward): the same as ``fit(history + values)``, without re-reading the
        history. NaN values are filled with the last known value (only past values).

        Raises:
            RuntimeError: no history yet (call :meth:`fit` first).
        """
        y, _, _ = self._require()
        new = np.asarray(values, dtype=np.float64)
        if len(new) == 0:
            return
        if np.isnan(new).any():
            new = pd.Series(np.concatenate([y[-1:], new])).ffill().to_numpy()[1:]
        self._y = np.concatenate([y, new])
        self._on_new_history(True)

    def _on_new_history(self, extends: bool) -> None:  # noqa: B027 - optional hook
        """Hook for subclasses (invalidate caches)."""

    def _require(self) -> tuple[np.ndarray, pd.Timestamp, pd.Timedelta]:
        if self._y is None or self._t0 is None or self._step is None:
            raise RuntimeError(f"{self.name}: call fit(history) before predict()")
        return self._y, self._t0, self._step

    def _row(self, issued_at: datetime | pd.Timestamp) -> int:
        """Index of the slot containing ``issued_at`` (may be past the end of the history)."""
        y, t0, step = self._require()
        t = pd.Timestamp(issued_at)
        if t.tzinfo is None:
            raise ValueError(f"issued_at {issued_at!r} has no time zone; give it in UTC")
        return int((t.tz_convert("UTC") - t0) // step)

    @property
    def slots_per_day(self) -> int:
        _, _, step = self._require()
        return max(1, int(pd.Timedelta(days=1) // step))

    def _cutoff(self, row: int) -> int:
        """First row of the refit period containing ``row``: parameters use data before it."""
        return int(self._cutoffs(np.array([row], dtype=np.int64))[0])

    def _cutoffs(self, rows: np.ndarray) -> np.ndarray:
        """Vectorised :meth:`_cutoff` (refit periods aligned to multiples of ``refit_every``)."""
        _, t0, step = self._require()
        t0_ns = t0.as_unit("ns").value
        step_ns = step.as_unit("ns").value
        every_ns = pd.Timedelta(self.refit_every).as_unit("ns").value
        t_ns = t0_ns + step_ns * rows.astype(np.int64)
        start = t_ns - np.mod(t_ns, every_ns)
        return -((t0_ns - start) // step_ns)  # ceil((start - t0) / step)

    # -- to implement ----------------------------------------------------------------------
    def _points(self, rows: np.ndarray, horizon: int, cutoff: int | None = None) -> np.ndarray:
        """Point forecasts, shape ``(len(rows), horizon)``; row i uses ``y[:i]`` only.

        ``cutoff``: use the parameters of that refit for every row (else each row's own).
        """
        raise NotImplementedError

    # -- quantiles -------------------------------------------------------------------------
    def _residual_quantiles(self, cutoff: int, horizon: int) -> np.ndarray:
        """Quantiles of (actual − forecast) per lead over issues in the last ``quantile_days``."""
        y, _, _ = self._require()
        key = (cutoff, horizon, min(cutoff, len(y)))
        if key in self._qcache:
            return self._qcache[key]
        spd = self.slots_per_day
        hi = min(cutoff, len(y)) - horizon + 1  # targets of these rows are all < cutoff
        lo = max(1, hi - self.quantile_days * spd)
        if hi - lo < 24:
            q = np.zeros((len(self.levels), horizon))
        else:
            rows = np.arange(lo, hi, max(1, (hi - lo) // (7 * spd * 4)) if hi - lo > 4000 else 1)
            pred = self._points(rows, horizon, cutoff)
            actual = sliding_window_view(y, horizon)[rows]
            q = np.nanquantile(actual - pred, self.levels, axis=0)
            q = np.maximum.accumulate(np.nan_to_num(q), axis=0)
        self._qcache[key] = q
        return q

    # -- public ----------------------------------------------------------------------------
    def predict_many(
        self, issued: Sequence[datetime] | pd.DatetimeIndex, horizon_slots: int
    ) -> np.ndarray:
        """Point forecasts for many issue times at once (what-if replay, benchmarks).

        Same numbers as :meth:`predict` (each issue uses only data before it).

        Returns:
            Array ``(len(issued), horizon_slots)`` in g/kWh.
        """
        rows = np.array([self._row(t) for t in issued], dtype=np.int64)
        with _one_blas_thread():
            return np.maximum(self._points_extended(rows, horizon_slots), 0.0)

    def _points_extended(self, rows: np.ndarray, horizon: int) -> np.ndarray:
        """Handle issue rows past the end of the history (stale data): forecast from the end."""
        y, _, _ = self._require()
        n = len(y)
        out = np.empty((len(rows), horizon))
        inside = rows <= n
        if inside.any():
            out[inside] = self._points(rows[inside], horizon)
        for k in np.flatnonzero(~inside):
            gap = int(rows[k] - n)
            out[k] = self._points(np.array([n]), gap + horizon)[0, gap:]
        return out

    def predict(
        self, issued_at: datetime, horizon_slots: int, step: timedelta = HOUR
    ) -> CarbonSeries:
        """Forecast ``horizon_slots`` slots starting with the slot that contains ``issued_at``.

        Args:
            issued_at: tz-aware issue time; only history before its slot is used.
            horizon_slots: number of slots to forecast.
            step: slot length; must equal the history's step.

        Returns:
            A :class:`CarbonSeries` with ``source=f"forecaster:{name}"``, ``issued_at`` and
            ``quantiles``; ``fallback`` is left to the caller.
        """
        y, t0, hstep = self._require()
        if pd.Timedelta(step) != hstep:
            raise ValueError(
                f"{self.name}: step {step} differs from the history's step {hstep}; "
                "resample the history to the slot length first"
            )
        if horizon_slots < 1:
            raise ValueError("horizon_slots must be >= 1")
        row = self._row(issued_at)
        if row < 2:
            raise ConfigError(
                f"no history before {pd.Timestamp(issued_at).isoformat()}",
                source=self.name,
                fix="give history that ends before issued_at",
            )
        with _one_blas_thread():
            pts = self._points_extended(np.array([row]), horizon_slots)[0]
            cutoff = self._cutoff(min(row, len(y)))
            gap = max(0, row - len(y))
            rq = self._residual_quantiles(cutoff, gap + horizon_slots)[:, gap:]
        idx = pd.DatetimeIndex(t0 + hstep * (row + np.arange(horizon_slots)))
        point = np.maximum(pts, 0.0)
        quantiles = {
            q: pd.Series(np.maximum(pts + rq[k], 0.0), index=idx, name=self.zone)
            for k, q in enumerate(self.levels)
        }
        return CarbonSeries(
            zone=self.zone,
            intensity_g_per_kwh=pd.Series(point, index=idx, name=self.zone),
            signal=self.signal,
            accounting=self.accounting,
            source=f"forecaster:{self.name}",
            issued_at=pd.Timestamp(issued_at).tz_convert("UTC").to_pydatetime(),
            quantiles=quantiles,
        )


def _gather(y: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``y[idx]`` with indices clipped into range (callers only index the past)."""
    return y[np.clip(idx, 0, len(y) - 1)]


# --------------------------------------------------------------------------- simple models
class Persistence(_BaseForecaster):
    """The last known value for every lead."""

    name = "persistence"

    def _points(self, rows: np.ndarray, horizon: int, cutoff: int | None = None) -> np.ndarray:
        y, _, _ = self._require()
        return np.repeat(_gather(y, rows - 1)[:, None], horizon, axis=1)


class SeasonalNaive(_BaseForecaster):
    """The value one period earlier (24 slots: same hour yesterday; 168: last week)."""

    def __init__(self, period_slots: int = 24, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.period_slots = period_slots
        self.name = f"seasonal-naive-{period_slots}"

    def _points(self, rows: np.ndarray, horizon: int, cutoff: int | None = None) -> np.ndarray:
        y, _, _ = self._require()
        lead = np.arange(1, horizon + 1)
        back = self.period_slots * np.ceil(lead / self.period_slots).astype(np.int64)
        return _gather(y, rows[:, None] + lead[None, :] - 1 - back[None, :])


class SeasonalNaiveForecaster:
    """Same time one day earlier; persistence when less than a day of history is known.

    The source chain's last resort (:class:`~greencpn.sources.chain.SourceChain` falls back to
    it when the configured forecaster fails, e.g. on too little history): it needs no regular
    grid and no minimum length. For a target slot ``t`` after the last known point ``L`` the
    value is the history at ``t - k·24 h`` with ``k = ceil((t - L) / 24 h)``; if that is before
    the first known point, the last known value (persistence). No quantiles.
    """

    name = "seasonal_naive"

    def __init__(self) -> None:
        self._history: pd.Series | None = None

    def fit(self, history: pd.Series) -> SeasonalNaiveForecaster:
        h = history.dropna().sort_index()
        if h.empty:
            raise ValueError("seasonal_naive: empty history")
        self._history = h
        return self

    def predict(
        self, issued_at: datetime, horizon_slots: int, step: timedelta = HOUR
    ) -> CarbonSeries:
        if self._history is None:
            raise RuntimeError("call fit() before predict()")
        h = self._history
        idx = slot_grid(issued_at, horizon_slots, step)
        last, first = h.index[-1], h.index[0]
        day = pd.Timedelta(days=1)
        ahead = (idx - last) / day
        k = np.maximum(0, np.ceil(ahead.to_numpy(dtype=float)))
        src = idx - pd.to_timedelta(k, unit="D")
        pos = h.index.searchsorted(src, side="right") - 1  # last known point at or before
        known = h.to_numpy(dtype=float)
        vals = np.where((src < first) | (pos < 0), known[-1], known[np.maximum(pos, 0)])
        return CarbonSeries(
            zone=str(h.name) if h.name is not None else "unknown",
            intensity_g_per_kwh=pd.Series(vals, index=idx, name="intensity_g_per_kwh"),
            source=f"forecaster:{self.name}",
            issued_at=pd.Timestamp(issued_at).tz_convert("UTC").to_pydatetime(),
        )


def slot_grid(issued_at: datetime, horizon_slots: int, step: timedelta) -> pd.DatetimeIndex:
    """``horizon_slots`` slot starts from the slot containing ``issued_at`` (aligned to the
    epoch)."""
    start = pd.Timestamp(issued_at).floor(pd.Timedelta(step))
    return pd.date_range(start, periods=horizon_slots, freq=pd.Timedelta(step))


class ProfileForecaster(_BaseForecaster):
    """7-day hourly profile plus the current deviation from it, decaying as ``exp(-lead/tau)``."""

    name = "profile"

    def __init__(self, days: int = 7, tau_slots: float = 6.0, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.days = days
        self.tau_slots = tau_slots

    def _points(self, rows: np.ndarray, horizon: int, cutoff: int | None = None) -> np.ndarray:
        y, _, _ = self._require()
        spd = self.slots_per_day
        lead = np.arange(1, horizon + 1)
        target = rows[:, None] + lead[None, :] - 1
        first_back = np.ceil(lead / spd).astype(np.int64)  # whole days back to reach the past
        prof = np.zeros((len(rows), horizon))
        for d in range(self.days):
            prof += _gather(y, target - spd * (first_back[None, :] + d))
        prof /= self.days
        last = _gather(y, rows - 1)
        last_prof = np.zeros(len(rows))
        for d in range(1, self.days + 1):
            last_prof += _gather(y, rows - 1 - spd * d)
        last_prof /= self.days
        decay = np.exp(-lead / self.tau_slots)
        return prof + (last - last_prof)[:, None] * decay[None, :]


# --------------------------------------------------------------------------- the default
@dataclasses.dataclass
class _GramState:
    version: int
    cutoff: int
    lo: int
    hi: int
    gram: np.ndarray
    cross: np.ndarray
    weights: np.ndarray
    updates: int


class LinearLagForecaster(_BaseForecaster):
    """Per-lead ridge regression on recent lags, last week's profile and calendar one-hots.

    Features of an issue at row ``t`` (all from ``y[:t]``), relative to the last value
    ``y[t-1]``: the 168 hourly lags ``y[t-k] - y[t-1]``; the mean of each of the 24 hour-lags over
    the 7 days; the 7 daily means; one-hots of the issue's hour of day and day of week; an
    intercept. Target of lead ``L``: ``y[t+L-1] - y[t-1]``. All leads share one Gram matrix, so a
    refit is one ``(p x p)`` solve with ``max_lead_slots`` right-hand sides. Ridge penalty
    ``ridge * n * var(feature)`` (scale-free), intercept unpenalised. Trained on issue rows of the
    last ``window_days`` whose targets lie before the refit cutoff; when the refit cutoff moves
    forward on the same (or an extended) history, the Gram matrix is updated incrementally.

    Falls back to :class:`ProfileForecaster` (or :class:`Persistence` with less than a week)
    while the history is shorter than ``min_train_days`` of usable rows. Leads beyond
    ``max_lead_slots`` (default 72 h) repeat the forecast of one day earlier. For sub-hourly
    slots the lags default to whole days of slots (30 min: 144 lags = 3 days).
    """

    name = "linear-lags"

    def __init__(
        self,
        *,
        window_days: int = 365,
        ridge: float = 0.01,
        lags: int | None = None,
        max_lead_slots: int | None = None,
        min_train_days: int = 14,
        quantile_days: int = 60,
        **kw: object,
    ) -> None:
        super().__init__(quantile_days=quantile_days, **kw)  # type: ignore[arg-type]
        self.window_days = window_days
        self.ridge = ridge
        self._lags_opt = lags
        self._max_lead_opt = max_lead_slots
        self.min_train_days = min_train_days
        self._X: np.ndarray | None = None
        self._T: np.ndarray | None = None
        self._ok: np.ndarray | None = None
        self._state: _GramState | None = None
        self._version = 0
        self._buf: dict[str, Any] | None = None
        self._simple_fitted = False
        self._profile = ProfileForecaster()
        self._persistence = Persistence()

    @property
    def lags(self) -> int:
        """Lag count: as given, else whole days of slots up to 168 (hourly: 168 = 7 days)."""
        if self._lags_opt is not None:
            return self._lags_opt
        spd = self.slots_per_day
        return max(spd, (168 // spd) * spd) if spd <= 168 else spd

    @property
    def max_lead_slots(self) -> int:
        """Longest trained lead: as given, else 72 hours of slots."""
        if self._max_lead_opt is not None:
            return self._max_lead_opt
        _, _, step = self._require()
        return max(1, int(pd.Timedelta(hours=72) // step))

    def _on_new_history(self, extends: bool) -> None:
        self._X = self._T = self._ok = None
        if not extends:
            self._version += 1
            self._state = None
            self._buf = None  # feature rows of another history: rebuild them all
        self._simple_fitted = False

    def _simple(self, rows: np.ndarray) -> _BaseForecaster:
        """The simpler model used while the history is too short (fitted on first use)."""
        if not self._simple_fitted:
            y, t0, step = self._require()
            idx = pd.DatetimeIndex(t0 + step * np.arange(len(y)))
            hist = pd.Series(y, index=idx, name=self.zone)
            self._profile.fit(hist)
            self._persistence.fit(hist)
            self._simple_fitted = True
        return self._profile if int(rows.min()) > 7 * self.slots_per_day else self._persistence

    # -- features --------------------------------------------------------------------------
    def _build(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Feature rows 0..n (row n = an issue right after the history), targets, row mask.

        When the history was extended (``fit`` on the same series with more values at the end,
        as a replay does every slot), only the new feature rows and the newly known targets are
        computed; the rows are kept in buffers that grow by doubling, so one more slot costs
        O(features) instead of O(history x features).
        """
        if self._X is not None and self._T is not None and self._ok is not None:
            return self._X, self._T, self._ok
        y, _, _ = self._require()
        n, K, HT = len(y), self.lags, self.max_lead_slots
        rows = n + 1
        m = n - HT + 1
        buf = self._buf
        if buf is not None and buf["K"] == K and buf["HT"] == HT and buf["rows"] <= rows:
            x0, t_lo = buf["rows"] - 1, max(0, buf["m"])  # the last row was an issue after y
        else:
            buf, x0, t_lo = None, 0, 0
        cap = rows if buf is None else buf["X"].shape[0]
        if buf is None or cap < rows:
            cap = max(rows, 2 * cap) if buf is not None else rows + 24 * 31
            X = np.zeros((cap, self._n_features()))
            T = np.zeros((cap, HT))
            if buf is not None:
                X[: buf["rows"]] = buf["X"][: buf["rows"]]
                T[: buf["rows"]] = buf["T"][: buf["rows"]]
        else:
            X, T = buf["X"], buf["T"]
        X[x0:rows] = self._feature_rows(x0, rows)
        T[x0:rows] = 0.0
        if m > t_lo:
            last = _gather(y, np.arange(t_lo, m) - 1)[:, None]
            T[t_lo:m] = sliding_window_view(y, HT)[t_lo:m] - last
        ok = np.zeros(rows, dtype=bool)
        ok[K : max(K, m)] = True
        self._buf = {"X": X, "T": T, "rows": rows, "m": m, "K": K, "HT": HT}
        self._X, self._T, self._ok = X[:rows], T[:rows], ok
        return self._X, self._T, self._ok

    def _n_features(self) -> int:
        K, spd = self.lags, self.slots_per_day
        days = max(1, K // spd)
        return K + (days + spd if days * spd == K else 0) + 23 + 6 + 1

    def _feature_rows(self, r0: int, r1: int) -> np.ndarray:
        """Feature rows ``r0..r1-1`` (row ``t`` uses ``y[:t]`` only; rows before ``lags`` are 0)."""
        y, t0, step = self._require()
        K, spd = self.lags, self.slots_per_day
        days = max(1, K // spd)
        nr = r1 - r0
        L = np.zeros((nr, K))
        a = max(r0, K)
        if r1 > a:
            L[a - r0 :] = sliding_window_view(y, K)[a - K : r1 - K][:, ::-1]  # y[t-1]..y[t-K]
        last = L[:, :1]
        parts = [L - last]
        if days * spd == K:
            cube = L.reshape(nr, days, spd)
            parts += [cube.mean(1) - last, cube.mean(2) - last]
        t_ns = t0.as_unit("ns").value + step.as_unit("ns").value * np.arange(r0, r1)
        hour = (t_ns // 3_600_000_000_000) % 24  # UTC hour of day, as DatetimeIndex.hour
        dow = (t_ns // 86_400_000_000_000 + 3) % 7  # 1970-01-01 was a Thursday (3)
        hours = _EYE24[hour][:, 1:]
        dows = _EYE7[dow][:, 1:]
        X = np.hstack(parts + [hours, dows, np.ones((nr, 1))])
        X[: max(0, min(K, r1) - r0)] = 0.0  # rows before the first full lag window
        return X

    def _train_range(self, cutoff: int) -> tuple[int, int]:
        """Issue rows ``[lo, hi)`` whose features and targets all lie before ``cutoff``."""
        y, _, _ = self._require()
        hi = max(self.lags, min(cutoff, len(y)) - self.max_lead_slots + 1)
        lo = max(self.lags, cutoff - self.window_days * self.slots_per_day)
        return lo, max(lo, hi)

    def _weights(self, cutoff: int) -> np.ndarray | None:
        """Ridge weights valid for issues in the refit period starting at ``cutoff``."""
        st = self._state
        lo, hi = self._train_range(cutoff)
        if (
            st is not None
            and st.version == self._version
            and (st.cutoff, st.lo, st.hi) == (cutoff, lo, hi)
        ):
            return st.weights
        X, T, _ = self._build()
        if hi - lo < self.min_train_days * self.slots_per_day:
            return None
        if (
            st is not None
            and st.version == self._version
            and cutoff > st.cutoff
            and st.updates < 30
            and lo >= st.lo
            and hi >= st.hi
            and st.hi >= lo
        ):
            add, rem = slice(st.hi, hi), slice(st.lo, lo)
            gram = st.gram + X[add].T @ X[add] - X[rem].T @ X[rem]
            cross = st.cross + X[add].T @ T[add] - X[rem].T @ T[rem]
            updates = st.updates + 1
        else:
            gram = X[lo:hi].T @ X[lo:hi]
            cross = X[lo:hi].T @ T[lo:hi]
            updates = 0
        self.n_refits += 1
        p = gram.shape[0]
        m = float(hi - lo)
        s = gram[-1, :-1]
        var = np.maximum(np.diag(gram)[:-1] / m - (s / m) ** 2, 1e-9)
        pen = gram.copy()
        pen[np.arange(p - 1), np.arange(p - 1)] += self.ridge * m * var
        try:
            w = np.linalg.solve(pen, cross)
        except np.linalg.LinAlgError:
            w = np.linalg.lstsq(pen, cross, rcond=None)[0]
        self._state = _GramState(self._version, cutoff, lo, hi, gram, cross, w, updates)
        return w

    @property
    def weights(self) -> np.ndarray | None:
        """Weights of the last refit (features x leads), for inspection and tests."""
        return None if self._state is None else self._state.weights

    def _points(self, rows: np.ndarray, horizon: int, cutoff: int | None = None) -> np.ndarray:
        y, _, _ = self._require()
        X, _, _ = self._build()
        HT = self.max_lead_slots
        out = np.empty((len(rows), horizon))
        cutoffs = self._cutoffs(rows) if cutoff is None else np.full(len(rows), cutoff)
        for c in np.unique(cutoffs):
            sel = np.flatnonzero(cutoffs == c)
            w = self._weights(int(c))
            r = rows[sel]
            if w is None:  # too little history: a simpler model
                out[sel] = self._simple(r)._points(r, horizon)
                continue
            base = X[r] @ w + _gather(y, r - 1)[:, None]
            h = min(horizon, HT)
            out[sel, :h] = base[:, :h]
            for k in range(h, horizon):  # past the longest trained lead: repeat daily
                out[sel, k] = out[sel, k - self.slots_per_day]
        return out


# --------------------------------------------------------------------------- helpers
def default_forecaster() -> LinearLagForecaster:
    """The shipped default: :class:`LinearLagForecaster` with its documented defaults."""
    return LinearLagForecaster()


def all_forecasters() -> list[_BaseForecaster]:
    """Every forecaster of this module (benchmarks, ``--forecaster`` choices)."""
    return [
        Persistence(),
        SeasonalNaive(24),
        SeasonalNaive(168),
        ProfileForecaster(),
        LinearLagForecaster(),
    ]


def extend(
    api_series: CarbonSeries,
    history: pd.Series | CarbonSeries,
    horizon: timedelta,
    forecaster: Forecaster | None = None,
    *,
    blend_tau_slots: float = 6.0,
) -> CarbonSeries:
    """Extend a too-short API forecast (e.g. 24 h) to ``horizon`` (e.g. 48 h).

    The slots the API covers keep the API's values. Later slots take the forecaster's values
    (forecast issued at the API's ``issued_at``, from ``history`` before it), shifted by the
    API-minus-forecaster difference at the API's last slot, that shift decaying as
    ``exp(-k / blend_tau_slots)`` so the two join without a jump.

    Returns:
        A series covering ``[start, start + horizon)``: ``source`` is
        ``"<api source>+forecaster:<name>"`` when extended, ``estimated`` is True on the extended
        slots, and ``quantiles`` spread around the values by the forecaster's per-lead errors.
        Unchanged when the API already covers the horizon.
    """
    api = api_series.intensity_g_per_kwh
    if len(api) == 0:
        raise ValueError("the API forecast is empty; use a forecaster instead of extend()")
    step = pd.Timedelta(api_series.step or HOUR)
    start = api.index[0]
    n_total = int(math.ceil(pd.Timedelta(horizon) / step))
    if len(api) >= n_total:
        return api_series
    f = forecaster or default_forecaster()
    f.fit(history)  # type: ignore[arg-type]
    issued = pd.Timestamp(api_series.issued_at) if api_series.issued_at is not None else start
    issued = min(issued, start)
    offset = int((start - issued) // step)
    fc = f.predict(issued.to_pydatetime(), offset + n_total, step.to_pytimedelta())
    model = fc.intensity_g_per_kwh.to_numpy()[offset:]
    n_api = len(api)
    vals = model.copy()
    vals[:n_api] = api.to_numpy(dtype=np.float64)
    shift = vals[n_api - 1] - model[n_api - 1]
    k = np.arange(1, n_total - n_api + 1)
    vals[n_api:] = np.maximum(model[n_api:] + shift * np.exp(-k / blend_tau_slots), 0.0)
    idx = pd.DatetimeIndex(start + step * np.arange(n_total))
    quantiles = {
        q: pd.Series(
            np.maximum(vals + (s.to_numpy()[offset:] - model), 0.0), index=idx, name=api_series.zone
        )
        for q, s in fc.quantiles.items()
    }
    est = np.ones(n_total, dtype=bool)
    est[:n_api] = (
        api_series.estimated.to_numpy(dtype=bool) if api_series.estimated is not None else False
    )
    return dataclasses.replace(
        api_series,
        intensity_g_per_kwh=pd.Series(vals, index=idx, name=api_series.zone),
        source=f"{api_series.source}+forecaster:{f.name}",
        estimated=pd.Series(est, index=idx, name=api_series.zone),
        quantiles=quantiles,
    )
