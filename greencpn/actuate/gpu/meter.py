"""Per-job GPU energy and speed measurements from the NVML total-energy counters (issue #14.4).

Like Zeus's monitor: when a job starts on some GPUs, :class:`JobEnergyMeter` reads each GPU's
total-energy counter (``nvmlDeviceGetTotalEnergyConsumption``, mJ since the driver loaded) and
its power limit; when the job ends it reads the counters again. The difference is the job's
board energy, the wall time between the two reads its duration, and the job's work (GPU-hours
at full power, from the plan or the scheduler) over that duration its speed at that cap. The
records go to a JSON-lines file (:class:`MeasurementStore`), one per finished job, with the
GPU model and the job's workload class, so ``greencpn models fit --from-ledger FILE`` can refit
the profiles from what the fleet really did.

A measurement is refused (logged, not stored) when a counter went backwards (driver reload),
when the job's GPUs changed cap while it ran, or when it ran for no time: a wrong record would
teach the refit a wrong curve.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from greencpn.clock import Clock
from greencpn.errors import ConfigError

log = logging.getLogger(__name__)


class EnergyReader(Protocol):
    """What the meter needs of a GPU backend (NVML, fake, or a node agent's view of one)."""

    def energy_j(self, index: int) -> float: ...

    def power_limit_w(self, index: int) -> float: ...


@dataclass(frozen=True)
class JobMeasurement:
    """One finished job on one GPU model at one cap."""

    job_id: str
    workload: str  # what recurs: the job's name / script (its "configuration")
    gpu_model: str
    workload_class: str | None
    power_cap_w: float
    gpus: int
    start: str  # ISO 8601 UTC
    end: str
    duration_s: float
    energy_j: float  # board energy of all its GPUs
    work_gpu_h: float  # work done, GPU-hours at full power

    @property
    def seconds_per_work(self) -> float:
        """Wall seconds per GPU-hour of full-power work, per GPU (lower = faster)."""
        return self.duration_s * self.gpus / self.work_gpu_h

    @property
    def power_w(self) -> float:
        """Average board power per GPU."""
        return self.energy_j / self.duration_s / self.gpus


class MeasurementError(ValueError):
    """A measurement that must not be stored (the reason says why)."""


@dataclass
class _Running:
    job_id: str
    workload: str
    gpu_model: str
    workload_class: str | None
    indices: tuple[int, ...]
    caps_w: tuple[float, ...]
    start: datetime
    energy_j: tuple[float, ...]
    work_gpu_h: float


class JobEnergyMeter:
    """Start/stop energy readings per job on a backend's GPU indices."""

    def __init__(self, backend: EnergyReader, clock: Clock, gpu_model: str) -> None:
        self.backend = backend
        self.clock = clock
        self.gpu_model = gpu_model
        self._running: dict[str, _Running] = {}
        self._lock = threading.Lock()

    def start(
        self,
        job_id: str,
        gpu_indices: list[int] | tuple[int, ...],
        *,
        work_gpu_h: float,
        workload: str | None = None,
        workload_class: str | None = None,
    ) -> None:
        """Read the counters and caps of the job's GPUs as it starts."""
        idx = tuple(gpu_indices)
        if not idx:
            raise MeasurementError(f"job {job_id}: no GPU indices")
        with self._lock:
            self._running[job_id] = _Running(
                job_id=job_id,
                workload=workload or job_id,
                gpu_model=self.gpu_model,
                workload_class=workload_class,
                indices=idx,
                caps_w=tuple(self.backend.power_limit_w(i) for i in idx),
                start=self.clock.now(),
                energy_j=tuple(self.backend.energy_j(i) for i in idx),
                work_gpu_h=work_gpu_h,
            )

    def stop(self, job_id: str, *, work_done_gpu_h: float | None = None) -> JobMeasurement:
        """Read the counters again; the job's measurement (MeasurementError if unusable)."""
        with self._lock:
            run = self._running.pop(job_id, None)
        if run is None:
            raise MeasurementError(f"job {job_id}: was not started on this meter")
        end = self.clock.now()
        duration_s = (end - run.start).total_seconds()
        caps = tuple(self.backend.power_limit_w(i) for i in run.indices)
        energy = tuple(self.backend.energy_j(i) for i in run.indices)
        work = run.work_gpu_h if work_done_gpu_h is None else work_done_gpu_h
        if duration_s <= 0:
            raise MeasurementError(f"job {job_id}: ran for {duration_s} s")
        if work <= 0:
            raise MeasurementError(f"job {job_id}: no work done")
        if len(set(run.caps_w + caps)) != 1:
            raise MeasurementError(
                f"job {job_id}: its GPUs' caps changed or differ while it ran "
                f"({run.caps_w} -> {caps} W); a measurement needs one cap"
            )
        used = [b - a for a, b in zip(run.energy_j, energy, strict=True)]
        if any(u < 0 for u in used):
            raise MeasurementError(
                f"job {job_id}: an energy counter went backwards (driver reloaded?)"
            )
        return JobMeasurement(
            job_id=run.job_id,
            workload=run.workload,
            gpu_model=run.gpu_model,
            workload_class=run.workload_class,
            power_cap_w=caps[0],
            gpus=len(run.indices),
            start=run.start.isoformat(),
            end=end.isoformat(),
            duration_s=duration_s,
            energy_j=sum(used),
            work_gpu_h=work,
        )


class MeasurementStore:
    """Append-only JSON lines of :class:`JobMeasurement` (one object per line)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def append(self, m: JobMeasurement) -> None:
        line = json.dumps(asdict(m), sort_keys=True)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as fh:
                fh.write(line + "\n")

    def record(self, meter: JobEnergyMeter, job_id: str, **kw: Any) -> JobMeasurement | None:
        """Stop ``job_id`` on ``meter`` and store it; a refused measurement is logged, not kept."""
        try:
            m = meter.stop(job_id, **kw)
        except MeasurementError as exc:
            log.warning("GPU measurement not kept: %s", exc)
            return None
        self.append(m)
        return m

    def read(self) -> list[JobMeasurement]:
        return read_measurements(self.path)


def read_measurements(path: Path) -> list[JobMeasurement]:
    """Every record of a measurement file (ConfigError naming the line on a bad one)."""
    if not path.is_file():
        raise ConfigError(
            "measurement file not found",
            source=str(path),
            fix="pass the JSON-lines file the GPU meter writes (MeasurementStore)",
        )
    out: list[JobMeasurement] = []
    names = set(JobMeasurement.__dataclass_fields__)
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict) or set(rec) != names:
                raise ValueError(f"needs exactly the keys {sorted(names)}")
            m = JobMeasurement(**rec)
            if m.duration_s <= 0 or m.work_gpu_h <= 0 or m.energy_j < 0 or m.gpus < 1:
                raise ValueError("duration_s, work_gpu_h and gpus must be positive, energy_j >= 0")
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"bad measurement: {exc}",
                source=f"{path}:{n}",
                fix="each line is one JSON object written by MeasurementStore.append",
            ) from None
        out.append(m)
    return out
