"""Real cluster job traces (Microsoft Philly, Alibaba PAI as resampled by GAIA) → greencpn jobs.

Two steps, so that large traces stay fast:

1. :func:`read_philly` / :func:`read_gaia` parse a trace into a pandas DataFrame with one row
   per job and the columns of :data:`TRACE_COLUMNS` (vectorised; ~0.1 s for 100k jobs).
2. :func:`frame_to_jobs` turns (a slice of) that frame into validated
   :class:`~greencpn.config.JobConfig` objects.

Deadlines are not in either trace; they come from a :class:`DeadlineRule`::

    deadline = release + duration_h × (1 + slack_factor) + slack_h

Formats (see ``../shared/data/SOURCES.md``):

* Philly (``philly_jobs_pollux.csv``): ``timestamp,duration,num_gpus,gpu_time,cluster`` —
  submit time (UTC, ``YYYY-mm-dd HH:MM:SS``), duration in seconds, GPUs, GPU-seconds, virtual
  cluster.
* GAIA / Alibaba PAI (``gaia_pai-100k.csv``): ``arrival_time,length,cpus`` — arrival and length in
  hours since the trace start (a configurable ``epoch``), and resource units. greencpn maps the
  resource units onto its ``gpus`` field (one unit = one accelerator), as GAIA does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import ValidationError

from greencpn.clock import ensure_utc
from greencpn.config import JobConfig
from greencpn.errors import ConfigError

#: Columns of the frames returned by the readers.
TRACE_COLUMNS = ("id", "release", "duration_h", "gpus", "work_gpu_h", "deadline", "group")

#: Default start of GAIA's hour offsets: the trace covers one (non-leap) year of hours 0–8760.
GAIA_DEFAULT_EPOCH = datetime(2023, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class DeadlineRule:
    """How a deadline is derived for a job that has none.

    ``deadline = release + duration_h × (1 + slack_factor) + slack_h``

    Attributes:
        slack_h: fixed slack in hours added to every job (default 24 h, GAIA's waiting bound).
        slack_factor: slack proportional to the job's own duration (0 = none).
    """

    slack_h: float = 24.0
    slack_factor: float = 0.0

    def __post_init__(self) -> None:
        if self.slack_h < 0 or self.slack_factor < 0:
            raise ConfigError(
                f"negative slack (slack_h={self.slack_h}, slack_factor={self.slack_factor})",
                field="deadline rule",
                fix="use slack_h >= 0 and slack_factor >= 0",
            )

    def apply(self, release: pd.Series, duration_h: pd.Series) -> pd.Series:
        """Vectorised deadlines for the given releases (UTC) and durations (hours)."""
        hours = duration_h * (1.0 + self.slack_factor) + self.slack_h
        return release + pd.to_timedelta(hours * 3600.0, unit="s").dt.round("s")


def _read_csv(path: str | Path, needed: list[str], what: str, numeric: list[str]) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"{what} trace not found",
            source=str(path),
            fix="check the path (real traces live in ../shared/data/traces/)",
        )
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise ConfigError(
            f"not a readable CSV: {exc}", source=str(path), fix=f"give a {what} trace CSV"
        ) from None
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ConfigError(
            f"missing column(s) {missing}; found {list(df.columns)}",
            source=str(path),
            fix=f"a {what} trace has the header {','.join(needed)}",
        )
    for col in numeric:
        df[col] = pd.to_numeric(df[col], errors="coerce")
    bad = df[needed].isna().any(axis=1)
    if bad.any():
        line = int(np.flatnonzero(bad.to_numpy())[0]) + 2
        raise ConfigError(
            "empty or non-numeric value", source=f"{path}:{line}", fix="fill or remove that row"
        )
    return df


def read_philly(
    path: str | Path,
    rule: DeadlineRule | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> pd.DataFrame:
    """Read the Philly trace (adaptdl's flattened ``philly.csv``) into a job frame.

    Args:
        path: CSV with ``timestamp,duration,num_gpus,gpu_time,cluster``.
        rule: deadline rule (default :class:`DeadlineRule()`).
        start, end: keep only jobs released in ``[start, end)`` (UTC).

    Returns:
        DataFrame with :data:`TRACE_COLUMNS`, sorted by release; ``id`` is ``philly-<row>``
        (row = 0-based data row in the file), ``work_gpu_h = gpu_time / 3600``.
    """
    rule = rule or DeadlineRule()
    df = _read_csv(
        path,
        ["timestamp", "duration", "num_gpus", "gpu_time"],
        "Philly",
        ["duration", "num_gpus", "gpu_time"],
    )
    try:
        release = pd.to_datetime(df["timestamp"], format="%Y-%m-%d %H:%M:%S", utc=True)
    except ValueError as exc:
        raise ConfigError(
            f"bad timestamp: {exc}",
            source=str(path),
            field="timestamp",
            fix="write timestamps as YYYY-mm-dd HH:MM:SS (UTC)",
        ) from None
    duration_h = df["duration"].astype(float) / 3600.0
    gpus = df["num_gpus"].astype(int)
    out = pd.DataFrame(
        {
            "id": "philly-" + df.index.astype(str),
            "release": release,
            "duration_h": duration_h,
            "gpus": gpus,
            "work_gpu_h": df["gpu_time"].astype(float) / 3600.0,
            "group": df["cluster"].astype(str) if "cluster" in df.columns else "",
        }
    )
    return _finish(out, rule, start, end, str(path))


def read_gaia(
    path: str | Path,
    rule: DeadlineRule | None = None,
    epoch: datetime = GAIA_DEFAULT_EPOCH,
    start: datetime | None = None,
    end: datetime | None = None,
) -> pd.DataFrame:
    """Read GAIA's Alibaba-PAI trace (hours since ``epoch``) into a job frame.

    Args:
        path: CSV with ``arrival_time,length,cpus`` (hours, hours, resource units).
        rule: deadline rule (default :class:`DeadlineRule()`).
        epoch: UTC time of hour 0 (default 2023-01-01T00:00Z).
        start, end: keep only jobs released in ``[start, end)`` (UTC).

    Returns:
        DataFrame with :data:`TRACE_COLUMNS`; ``id`` is ``gaia-<row>``,
        ``gpus = ceil(cpus)``, ``work_gpu_h = gpus × length``.
    """
    rule = rule or DeadlineRule()
    epoch = ensure_utc(epoch, "GAIA epoch")
    df = _read_csv(
        path, ["arrival_time", "length", "cpus"], "GAIA", ["arrival_time", "length", "cpus"]
    )
    gpus = np.ceil(df["cpus"].astype(float)).astype(int)
    duration_h = df["length"].astype(float)
    out = pd.DataFrame(
        {
            "id": "gaia-" + df.index.astype(str),
            "release": pd.Timestamp(epoch)
            + pd.to_timedelta(df["arrival_time"].astype(float) * 3600.0, unit="s").dt.round("s"),
            "duration_h": duration_h,
            "gpus": gpus,
            "work_gpu_h": gpus * duration_h,
            "group": "",
        }
    )
    return _finish(out, rule, start, end, str(path))


def _finish(
    out: pd.DataFrame, rule: DeadlineRule, start: datetime | None, end: datetime | None, source: str
) -> pd.DataFrame:
    bad = (out["duration_h"] <= 0) | (out["gpus"] < 1) | (out["work_gpu_h"] <= 0)
    if bad.any():
        line = int(np.flatnonzero(bad.to_numpy())[0]) + 2
        raise ConfigError(
            "job with non-positive duration, GPUs or work",
            source=f"{source}:{line}",
            fix="remove that row or correct it",
        )
    if start is not None:
        out = out[out["release"] >= pd.Timestamp(ensure_utc(start, "start"))]
    if end is not None:
        out = out[out["release"] < pd.Timestamp(ensure_utc(end, "end"))]
    out = out.assign(deadline=rule.apply(out["release"], out["duration_h"]))
    out = out.sort_values("release", kind="stable").reset_index(drop=True)
    return out.loc[:, list(TRACE_COLUMNS)]


def frame_to_jobs(frame: pd.DataFrame, *, checkpointable: bool = False) -> list[JobConfig]:
    """Validated :class:`JobConfig` objects for each row of a trace frame.

    Raises:
        ConfigError: a row does not make a valid job (names the job id).
    """
    jobs: list[JobConfig] = []
    cols = [frame[c].to_numpy() for c in ("id", "gpus", "work_gpu_h")]
    releases = np.asarray(frame["release"].dt.to_pydatetime(), dtype=object)
    deadlines = np.asarray(frame["deadline"].dt.to_pydatetime(), dtype=object)
    for i in range(len(frame)):
        try:
            jobs.append(
                JobConfig(
                    id=str(cols[0][i]),
                    gpus=int(cols[1][i]),
                    work_gpu_h=float(cols[2][i]),
                    release=releases[i],
                    deadline=deadlines[i],
                    checkpointable=checkpointable,
                )
            )
        except ValidationError as exc:
            err = exc.errors()[0]
            raise ConfigError(
                err["msg"].removeprefix("Value error, "),
                source=f"job {cols[0][i]}",
                field=".".join(str(p) for p in err["loc"]) or None,
                fix="check the trace row or the deadline rule",
            ) from None
    return jobs


def load_trace_jobs(
    path: str | Path,
    kind: str,
    *,
    rule: DeadlineRule | None = None,
    epoch: datetime = GAIA_DEFAULT_EPOCH,
    start: datetime | None = None,
    end: datetime | None = None,
    checkpointable: bool = False,
) -> list[JobConfig]:
    """Read a ``philly`` or ``gaia`` trace straight into jobs (see the readers for the args)."""
    if kind == "philly":
        frame = read_philly(path, rule, start=start, end=end)
    elif kind == "gaia":
        frame = read_gaia(path, rule, epoch=epoch, start=start, end=end)
    else:
        raise ConfigError(
            f"unknown trace kind {kind!r}", field="kind", fix="use 'philly' or 'gaia'"
        )
    return frame_to_jobs(frame, checkpointable=checkpointable)
