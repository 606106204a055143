"""Jobs of a replay: real traces (Philly, Alibaba-PAI as resampled by GAIA — the GAIA Azure
trace uses the same format) or greencpn's own job files, with deadlines from a slack rule,
residency tags and a site assignment rule.

* **Slack** (``--slack``), for traces without deadlines: ``+8h`` / ``+24h`` (release + run time
  + that many hours), ``x2`` (release + run time × 2), ``next-workday`` (Let's Wait Awhile's
  rule: done by 09:00 UTC of the next workday when the job would end outside Mon–Fri
  09:00–17:00, else at its natural end). greencpn job files keep their own deadlines.
* **Sites** (``--assign``): ``hash`` (the trace's virtual cluster / group, hashed onto the
  sites — the same group always lands on the same site), ``round-robin`` (by release order),
  or a site name (all jobs submitted there). The assigned site is the job's *home* (where a
  carbon-agnostic scheduler runs it).
* **Residency** (``--residency FRACTION:JURISDICTION``, repeatable): that share of the jobs
  (chosen with the seed) may only run at sites with the jurisdiction; they are homed at one.
  A greencpn job's own ``jurisdictions`` are always honoured.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from greencpn.config import JobConfig, load_jobs_csv
from greencpn.errors import ConfigError
from greencpn.sources.traces import DeadlineRule, read_gaia, read_philly
from greencpn.whatif.model import FleetSpec, SimJob

log = logging.getLogger(__name__)

TRACE_KINDS = ("philly", "gaia", "greencpn")


def detect_kind(path: Path) -> str:
    """``philly`` / ``gaia`` / ``greencpn`` from the CSV header (JSON files are greencpn's)."""
    if path.suffix.lower() == ".json":
        return "greencpn"
    try:
        with path.open(encoding="utf-8-sig") as fh:
            header = {c.strip() for c in fh.readline().split(",")}
    except FileNotFoundError:
        raise ConfigError(
            "jobs file not found", source=str(path), fix="check --jobs PATH"
        ) from None
    if {"timestamp", "duration", "num_gpus"} <= header:
        return "philly"
    if {"arrival_time", "length", "cpus"} <= header:
        return "gaia"
    if {"id", "gpus", "work_gpu_h", "release", "deadline"} <= header:
        return "greencpn"
    raise ConfigError(
        f"unknown jobs file format (header {sorted(header)})",
        source=f"{path}:1",
        fix="give a Philly trace (timestamp,duration,num_gpus,...), a GAIA/PAI trace "
        "(arrival_time,length,cpus) or a greencpn jobs CSV (id,gpus,work_gpu_h,release,deadline)",
    )


def parse_slack(text: str) -> str:
    """Validate a slack rule (see the module docstring); returns it normalised."""
    t = text.strip().lower()
    if t == "next-workday":
        return t
    try:
        if t.startswith("+") and t.endswith("h"):
            if float(t[1:-1]) >= 0:
                return t
        elif t.startswith("x") and float(t[1:]) >= 1:
            return t
    except ValueError:
        pass
    raise ConfigError(
        f"unknown slack rule {text!r}",
        field="--slack",
        fix="use +8h, +24h (any hours), x2 (multiple of the run time, >= 1) or next-workday",
    )


def _next_workday(natural_end: pd.Series) -> pd.Series:
    """LWA's next-workday deadline for each natural end time (UTC)."""
    out = []
    for t in natural_end:
        wd, h = t.weekday(), t.hour + t.minute / 60.0
        nine = t.normalize() + pd.Timedelta(hours=9)
        if wd == 5:
            out.append(nine + pd.Timedelta(days=2))
        elif wd == 6 or h > 17:
            out.append(nine + pd.Timedelta(days=1))
        elif h < 9:
            out.append(nine)
        else:
            out.append(t)
    return pd.Series(out, index=natural_end.index)


def deadlines(release: pd.Series, duration_h: pd.Series, slack: str) -> pd.Series:
    slack = parse_slack(slack)
    natural = release + pd.to_timedelta(duration_h * 3600.0, unit="s").dt.round("s")
    if slack == "next-workday":
        d = _next_workday(natural)
    elif slack.startswith("+"):
        d = DeadlineRule(slack_h=float(slack[1:-1])).apply(release, duration_h)
    else:
        d = DeadlineRule(slack_h=0.0, slack_factor=float(slack[1:]) - 1.0).apply(
            release, duration_h
        )
    # a deadline is after its release even for a zero slack
    return d.where(d > release, release + pd.Timedelta(seconds=1))


def _site_of_group(group: str, sites: list[str]) -> str:
    h = int(hashlib.sha256(group.encode()).hexdigest()[:8], 16)
    return sites[h % len(sites)]


def load_jobs(
    path: str | Path,
    fleet: FleetSpec,
    *,
    kind: str | None = None,
    slack: str = "+24h",
    assign: str = "hash",
    residency: list[str] | None = None,
    seed: int = 0,
    start: datetime | None = None,
    end: datetime | None = None,
    max_gpus: int | None = None,
    gaia_epoch: datetime | None = None,
) -> list[SimJob]:
    """Jobs for a replay (see the module docstring).

    Raises:
        ConfigError: bad file (naming the file and line), rule or assignment.
    """
    path = Path(path)
    kind = kind or detect_kind(path)
    sites = [s.name for s in fleet.sites]
    if assign not in ("hash", "round-robin") and assign not in sites:
        raise ConfigError(
            f"unknown site assignment {assign!r}",
            field="--assign",
            fix=f"use hash, round-robin or one of the sites {sites}",
        )
    if kind == "greencpn":
        cfg_jobs = _read_greencpn(path)
        frame = pd.DataFrame(
            {
                "id": [j.id for j in cfg_jobs],
                "release": pd.to_datetime([j.release for j in cfg_jobs], utc=True),
                "gpus": [j.gpus for j in cfg_jobs],
                "work_gpu_h": [j.work_gpu_h for j in cfg_jobs],
                "deadline": pd.to_datetime([j.deadline for j in cfg_jobs], utc=True),
                "group": [j.user_region or "" for j in cfg_jobs],
            }
        )
        juris = {j.id: tuple(j.jurisdictions) for j in cfg_jobs}
        ckpt = {j.id: j.checkpointable for j in cfg_jobs}
    elif kind in ("philly", "gaia"):
        parse_slack(slack)
        if kind == "philly":
            frame = read_philly(path, start=start, end=end)
        else:
            if gaia_epoch is not None:
                frame = read_gaia(path, epoch=gaia_epoch, start=start, end=end)
            else:
                frame = read_gaia(path, start=start, end=end)
        frame = frame.assign(deadline=deadlines(frame["release"], frame["duration_h"], slack))
        juris, ckpt = {}, {}
    else:
        raise ConfigError(
            f"unknown trace kind {kind!r}", field="--trace-kind", fix=f"use {TRACE_KINDS}"
        )
    if start is not None:
        frame = frame[frame["release"] >= pd.Timestamp(start)]
    if end is not None:
        frame = frame[frame["release"] < pd.Timestamp(end)]
    frame = frame.sort_values(["release", "id"], kind="stable").reset_index(drop=True)
    cap = max_gpus or max(p.nodes * p.gpus_per_node for p in fleet.pools)
    rng = np.random.default_rng(seed)
    tags: list[tuple[float, str]] = []
    for r in residency or []:
        frac, _, j = r.partition(":")
        try:
            f = float(frac)
        except ValueError:
            f = -1.0
        if not j or not 0 <= f <= 1:
            raise ConfigError(
                f"bad residency rule {r!r}",
                field="--residency",
                fix="write FRACTION:JURISDICTION, e.g. 0.3:EU",
            )
        tags.append((f, j))
    out: list[SimJob] = []
    skipped = 0
    ids = frame["id"].astype(str).tolist()
    groups = frame["group"].astype(str).tolist()
    gpus_col = frame["gpus"].astype(int).tolist()
    work_col = frame["work_gpu_h"].astype(float).tolist()
    rel_col = list(pd.DatetimeIndex(frame["release"]).to_pydatetime())
    dl_col = list(pd.DatetimeIndex(frame["deadline"]).to_pydatetime())
    for i, jid in enumerate(ids):
        allowed = list(sites)
        jur = juris.get(jid, ())
        for f, j in tags:
            if rng.random() < f:
                jur = (*jur, j)
        if jur:
            allowed = [s.name for s in fleet.sites if set(jur) & set(s.jurisdictions)]
            if not allowed:
                raise ConfigError(
                    f"job {jid} needs jurisdiction {list(jur)}; no site has it",
                    source=str(path),
                    field="jurisdictions",
                    fix="add the jurisdiction to a site or drop the residency rule",
                )
        if assign == "hash":
            home = _site_of_group(groups[i] or jid, allowed)
        elif assign == "round-robin":
            home = allowed[i % len(allowed)]
        else:
            home = assign if assign in allowed else allowed[0]
        gpus = gpus_col[i]
        if gpus > cap:
            skipped += 1  # larger than any pool: cannot run anywhere in this fleet
            continue
        rel, dl = rel_col[i], dl_col[i]
        out.append(
            SimJob(
                id=jid,
                gpus=gpus,
                work_gpu_h=work_col[i],
                release=rel,
                deadline=dl,
                sites=tuple(allowed),
                home_site=home,
                checkpointable=bool(ckpt.get(jid, False)),
                jurisdictions=tuple(jur),
            )
        )
    if skipped:
        log.warning(
            "%s: skipped %d jobs asking more than %d GPUs (the largest pool)", path, skipped, cap
        )
    return out


def _read_greencpn(path: Path) -> list[JobConfig]:
    if path.suffix.lower() == ".json":
        from greencpn.sources.load import load_jobs_json

        return load_jobs_json(path, now=None)
    return load_jobs_csv(path)
