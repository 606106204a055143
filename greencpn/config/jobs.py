"""Jobs: ``[[jobs]]`` and ``jobs_file`` (CSV here; other formats through registered readers)."""

from __future__ import annotations

import csv
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from greencpn.config.base import NonNegFloat, PositiveFloat, _parse_utc, _Strict
from greencpn.config.errors import _FIX_HINTS
from greencpn.errors import ConfigError


class JobConfig(_Strict):
    id: str = Field(min_length=1)
    gpus: int = Field(ge=1)
    work_gpu_h: PositiveFloat = Field(description="work in GPU-hours at full power")
    release: datetime
    deadline: datetime
    jurisdictions: list[str] = Field(
        default_factory=list, description="where its data may go; empty = anywhere"
    )
    user_region: str | None = None
    max_latency_ms: NonNegFloat | None = None
    checkpointable: bool = False
    priority: float = Field(default=1.0, gt=0, description="multiplies the lateness weight")
    submit_site: str | None = Field(
        default=None,
        min_length=1,
        description="site the job was submitted at: the carbon-agnostic baseline runs it "
        "there (default: the allowed site with the most GPUs, ties by name — "
        "baseline_submit_site)",
    )
    workload_class: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]+$",
        description="GPU workload class (e.g. light, heavy: see models/README.md); its "
        "profile curve sets the job's speed and power at each cap; none = the model's median",
    )

    @field_validator("release", "deadline", mode="before")
    @classmethod
    def _utc(cls, v: Any) -> datetime:
        return _parse_utc(v)

    @model_validator(mode="after")
    def _check(self) -> JobConfig:
        if self.deadline <= self.release:
            raise ValueError(
                f"deadline {self.deadline.isoformat()} is not after release {self.release.isoformat()}"
            )
        if (self.max_latency_ms is None) != (self.user_region is None):
            raise ValueError("give user_region and max_latency_ms together (or neither)")
        return self


_JOB_COLUMNS = {
    "id",
    "gpus",
    "work_gpu_h",
    "release",
    "deadline",
    "jurisdictions",
    "user_region",
    "max_latency_ms",
    "checkpointable",
    "priority",
    "submit_site",
    "workload_class",
}


def load_jobs_csv(path: Path) -> list[JobConfig]:
    """Read jobs from CSV (columns as the ``[[jobs]]`` fields; jurisdictions ``;``-separated)."""
    if not path.is_file():
        raise ConfigError(
            "jobs file not found", source=str(path), fix="check jobs_file in the config"
        )
    jobs: list[JobConfig] = []
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        cols = set(reader.fieldnames or [])
        missing = {"id", "gpus", "work_gpu_h", "release", "deadline"} - cols
        if missing:
            raise ConfigError(
                f"missing column(s) {sorted(missing)}",
                source=str(path),
                fix="the header needs id,gpus,work_gpu_h,release,deadline",
            )
        unknown = cols - _JOB_COLUMNS
        if unknown:
            raise ConfigError(
                f"unknown column(s) {sorted(unknown)}",
                source=str(path),
                fix=f"use only {sorted(_JOB_COLUMNS)}",
            )
        for lineno, row in enumerate(reader, start=2):
            rec: dict[str, Any] = {k: v for k, v in row.items() if v not in (None, "")}
            if "jurisdictions" in rec:
                rec["jurisdictions"] = [
                    j.strip() for j in rec["jurisdictions"].split(";") if j.strip()
                ]
            if "checkpointable" in rec:
                val = rec["checkpointable"].strip().lower()
                if val not in {"true", "false", "1", "0", "yes", "no"}:
                    raise ConfigError(
                        f"checkpointable={rec['checkpointable']!r}",
                        source=f"{path}:{lineno}",
                        field="checkpointable",
                        fix="write true or false",
                    )
                rec["checkpointable"] = val in {"true", "1", "yes"}
            try:
                jobs.append(JobConfig.model_validate(rec))
            except ValidationError as exc:
                err = exc.errors()[0]
                field = ".".join(str(p) for p in err["loc"]) or None
                raise ConfigError(
                    err["msg"].removeprefix("Value error, "),
                    source=f"{path}:{lineno} (job {rec.get('id', '?')})",
                    field=field,
                    fix=_FIX_HINTS.get(err["type"], "see README.md 'Jobs'"),
                ) from None
    return jobs


JobFileReader = Callable[[Path, "datetime | None"], list[JobConfig]]
#: readers for ``jobs_file`` by suffix beyond CSV; :mod:`greencpn.sources.load` registers
#: ``.json`` (plain JSON and saved Slurm output) when imported. Core config imports no source.
JOB_FILE_READERS: dict[str, JobFileReader] = {}


def register_job_file_reader(suffix: str, reader: JobFileReader) -> None:
    """Let ``load_config`` read ``jobs_file`` entries ending in ``suffix`` with ``reader``."""
    JOB_FILE_READERS[suffix.lower()] = reader
