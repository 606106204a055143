"""Helpers to write tiny fleets as real TOML + CSV files (the same path users take)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from tests.common import START


def iso(hours: float) -> str:
    return (START + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


GPU = """
[[gpu_models]]
name = "T1"
power_limit_min_w = 100
power_limit_max_w = 300
power_limit_default_w = 300
idle_w = 0
source = "test profile"
[[gpu_models.levels]]
cap_w = 300
throughput = 1.0
power_factor = 1.0
"""


def write_fleet(
    tmp: Path,
    *,
    carbon: dict[str, list[float]],
    sites: str,
    pools: str,
    jobs: list[dict],
    slots: int | None = None,
    extra: str = "",
    gpu: str = GPU,
) -> Path:
    zones = list(carbon)
    n = len(next(iter(carbon.values())))
    lines = ["datetime_utc," + ",".join(zones)]
    for i in range(n):
        lines.append(iso(i) + "," + ",".join(str(carbon[z][i]) for z in zones))
    (tmp / "carbon.csv").write_text("\n".join(lines) + "\n")
    cols = [
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
    ] + (["submit_site"] if any("submit_site" in j for j in jobs) else [])
    rows = [",".join(cols)]
    for j in jobs:
        rows.append(",".join(str(j.get(c, "")) for c in cols))
    (tmp / "jobs.csv").write_text("\n".join(rows) + "\n")
    text = f"""
name = "tiny"
jobs_file = "jobs.csv"
[horizon]
start = "{iso(0)}"
slots = {slots or n}
slot_minutes = 60
[objective]
carbon_weight_per_kg = 1.0
cost_weight = 0.0
lateness_weight_per_gpu_h = 10.0
[solver]
time_limit_s = 30
mip_rel_gap = 0.0
[carbon]
file = "carbon.csv"
{extra}
{gpu}
{sites}
{pools}
"""
    path = tmp / "fleet.toml"
    path.write_text(text)
    return path


@pytest.fixture
def fleet(tmp_path):
    def make(**kw):
        return write_fleet(tmp_path, **kw)

    return make


def t4_base_model():
    """The one-level T4 (300 W, θ 1.0) that the learned-curve tests refit from measurements."""
    from greencpn.config import GpuModelConfig

    return GpuModelConfig.model_validate(
        {
            "name": "T4",
            "power_limit_min_w": 100.0,
            "power_limit_max_w": 300.0,
            "power_limit_default_w": 300.0,
            "idle_w": 0.0,
            "source": "test profile",
            "levels": [{"cap_w": 300.0, "throughput": 1.0, "power_factor": 1.0}],
        }
    )


def t4_run(job_id: str, workload: str, cap_w: float, duration_s: float, watts: float):
    """One measured 1-GPU, 1 GPU-h job of class "heavy" on the T4 at ``cap_w`` (what the GPU
    meter records), drawing ``watts`` for ``duration_s``."""
    from greencpn.actuate.gpu.meter import JobMeasurement

    return JobMeasurement(
        job_id=job_id,
        workload=workload,
        gpu_model="T4",
        workload_class="heavy",
        power_cap_w=cap_w,
        gpus=1,
        start=START.isoformat(),
        end=START.isoformat(),
        duration_s=duration_s,
        energy_j=watts * duration_s,
        work_gpu_h=1.0,
    )


def plan_horizon(slots: int = 4) -> dict:
    """A plan document's ``horizon`` block: hourly slots from START."""
    return {
        "start": iso(0),
        "slot_minutes": 60,
        "slots": slots,
        "slot_starts": [iso(h) for h in range(slots)],
    }


def learned_one_job_fleet(
    tmp: Path, model_toml: str, workload_class: str, solver_extra: str = ""
) -> Path:
    """One site, one 1-GPU T4 node, a flat 500 g/kWh grid, one job X (3.15 GPU-h, released at
    slot 0, due at 3.25 h) of ``workload_class``, with ``cap_mode = "job"`` and the learned T4
    profile ``model_toml`` as the fleet's models_dir (``solver_extra``: more ``[solver]``
    lines). Shared by the learned-curve and confidence-bound tests."""
    models = tmp / "learned"
    models.mkdir(exist_ok=True)
    (models / "t4.toml").write_text(model_toml)
    path = write_fleet(
        tmp,
        carbon={"Z": [500.0] * 6},
        sites='[[sites]]\nname = "a"\nzone = "Z"\njurisdictions = ["EU"]\npue = 1.0\n',
        pools='[[pools]]\nname = "p"\nsite = "a"\nnodes = 1\ngpu_model = "T4"\n'
        "gpus_per_node = 1\nnode_idle_w = 100.0\ninitial_on = 0\nspares = 0\n",
        jobs=[],
        gpu="",
    )
    (tmp / "jobs.csv").write_text(
        "id,gpus,work_gpu_h,release,deadline,workload_class\n"
        f"X,1,3.15,{iso(0)},{iso(3.25)},{workload_class}\n"
    )
    extra = 'cap_mode = "job"' + (f"\n{solver_extra}" if solver_extra else "")
    text = path.read_text().replace("mip_rel_gap = 0.0", "mip_rel_gap = 0.0\n" + extra)
    path.write_text(f'models_dir = "{models}"\n' + text)
    return path
