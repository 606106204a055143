"""Job lists from files: JSON or CSV written by hand or by another tool, and saved Slurm output.

One entry point, :func:`load_jobs_file`, picks the reader from the file:

* ``*.csv`` — the columns of a ``[[jobs]]`` entry (``id,gpus,work_gpu_h,release,deadline`` and
  optionally ``jurisdictions`` (``;``-separated), ``user_region``, ``max_latency_ms``,
  ``checkpointable``, ``priority``); read by :func:`greencpn.config.load_jobs_csv`.
* ``*.json`` — either a list of job objects or ``{"jobs": [...]}`` with the same fields; or a
  saved ``squeue --json`` / ``sacct --json`` output (detected by its ``meta``/shape), whose
  pending jobs are returned (see :mod:`greencpn.sources.slurm_queue`).

For running Slurm jobs and the nodes they hold, use
:func:`greencpn.sources.slurm_queue.read_queue_file` or ``read_squeue`` directly.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from greencpn.config import JobConfig, load_jobs_csv, register_job_file_reader
from greencpn.errors import ConfigError
from greencpn.sources.slurm_queue import QueueRules, parse_sacct_json, parse_squeue_json


def _is_slurm(doc: Any) -> bool:
    if not isinstance(doc, Mapping) or not isinstance(doc.get("jobs"), list):
        return False
    if "meta" in doc:
        return True
    jobs = doc["jobs"]
    return bool(jobs) and isinstance(jobs[0], Mapping) and ("job_id" in jobs[0])


def load_jobs_json(
    path: str | Path, now: datetime | None = None, rules: QueueRules | None = None
) -> list[JobConfig]:
    """Jobs from a JSON file: a list of job objects, ``{"jobs": [...]}``, or Slurm JSON.

    Args:
        path: the file.
        now: current time (UTC); needed only for Slurm output.
        rules: Slurm deadline rules.

    Raises:
        ConfigError: unreadable JSON or an invalid job (names the index and field).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError("jobs file not found", source=str(path), fix="check the path")
    try:
        doc = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"not valid JSON: {exc}", source=str(path), fix="fix the JSON syntax"
        ) from None
    if _is_slurm(doc):
        if now is None:
            raise ConfigError(
                "Slurm JSON needs the current time",
                source=str(path),
                fix="pass now= (a UTC datetime) to load_jobs_file",
            )
        plugin = str(((doc.get("meta") or {}).get("plugin") or {}).get("type") or "")
        first = doc["jobs"][0] if doc["jobs"] else {}
        if "dbv" in plugin or isinstance(first.get("time"), Mapping):
            return parse_sacct_json(doc, now, rules, source=str(path)).jobs
        return parse_squeue_json(doc, now, rules, source=str(path)).jobs
    items = doc.get("jobs") if isinstance(doc, Mapping) else doc
    if not isinstance(items, list):
        raise ConfigError(
            "expected a list of jobs or an object with a 'jobs' list",
            source=str(path),
            fix='write [{"id": ..., "gpus": ..., ...}] or {"jobs": [...]}',
        )
    jobs: list[JobConfig] = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise ConfigError(
                f"entry {i} is not an object",
                source=str(path),
                field=f"jobs[{i}]",
                fix="each job is an object with id, gpus, work_gpu_h, release, deadline",
            )
        try:
            jobs.append(JobConfig.model_validate(dict(item)))
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(p) for p in err["loc"])
            raise ConfigError(
                err["msg"].removeprefix("Value error, "),
                source=str(path),
                field=f"jobs[{i}]({item.get('id', '?')})" + (f".{loc}" if loc else ""),
                fix="see docs/load.md for the job fields and their units",
            ) from None
    ids = [j.id for j in jobs]
    dup = sorted({x for x in ids if ids.count(x) > 1})
    if dup:
        raise ConfigError(
            f"duplicate job id(s) {dup[:5]}",
            source=str(path),
            field="jobs",
            fix="give every job a unique id",
        )
    return jobs


def load_jobs_file(
    path: str | Path, now: datetime | None = None, rules: QueueRules | None = None
) -> list[JobConfig]:
    """Jobs from a CSV or JSON file (see the module docstring for the formats)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return load_jobs_csv(path)
    if suffix == ".json":
        return load_jobs_json(path, now, rules)
    raise ConfigError(
        f"unknown jobs file type {suffix or '(none)'!r}",
        source=str(path),
        fix="use a .csv or .json file",
    )


register_job_file_reader(".json", lambda path, now: load_jobs_json(path, now=now))
