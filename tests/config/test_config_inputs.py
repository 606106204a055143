"""Issue #10 item 6: config inputs that used to get through (``inf``/``nan`` in numeric fields,
``jobs_file = ""``, a carbon file that is a folder, a horizon start off the slot grid)."""

from __future__ import annotations

from pathlib import Path

import pytest

from greencpn.config import load_config
from greencpn.errors import ConfigError

CARBON = "datetime_utc,DE\n" + "".join(f"2026-03-02 {h:02d}:00:00,{300 + h}\n" for h in range(24))
JOBS = "id,gpus,work_gpu_h,release,deadline\nj1,2,4,2026-03-02T00:00:00Z,2026-03-02T12:00:00Z\n"

BASE = {
    "horizon.slots": "12",
    "objective.carbon_weight_per_kg": "1.0",
    "objective.cost_weight": "0.0",
    "objective.lateness_weight_per_gpu_h": "10.0",
    "objective.unserved_weight_per_gpu_h": "1000.0",
    "solver.time_limit_s": "10",
    "solver.mip_rel_gap": "0.01",
    "sites.pue": "1.2",
    "sites.power_budget_kw": "50.0",
    "sites.price_per_kwh": "0.2",
    "pools.node_idle_w": "600.0",
    "pools.node_off_w": "10.0",
    "pools.node_boot_w": "700.0",
    "pools.boot_time_min": "5.0",
    "pools.min_up_h": "1.0",
    "pools.min_down_h": "1.0",
    "pools.load_quantile": "0.9",
    "jobs.work_gpu_h": "4.0",
    "jobs.priority": "1.0",
    "jobs.max_latency_ms": "50.0",
    "latency": "5.0",
}


def _toml(v: dict[str, str], jobs_file: str | None = None) -> str:
    jf = f'jobs_file = "{jobs_file}"\n' if jobs_file is not None else ""
    return f"""{jf}
[horizon]
start = "2026-03-02T00:00:00Z"
slots = {v["horizon.slots"]}

[objective]
carbon_weight_per_kg = {v["objective.carbon_weight_per_kg"]}
cost_weight = {v["objective.cost_weight"]}
lateness_weight_per_gpu_h = {v["objective.lateness_weight_per_gpu_h"]}
unserved_weight_per_gpu_h = {v["objective.unserved_weight_per_gpu_h"]}

[solver]
time_limit_s = {v["solver.time_limit_s"]}
mip_rel_gap = {v["solver.mip_rel_gap"]}

[carbon]
file = "carbon.csv"

[[sites]]
name = "s1"
zone = "DE"
pue = {v["sites.pue"]}
power_budget_kw = {v["sites.power_budget_kw"]}
price_per_kwh = {v["sites.price_per_kwh"]}
latency_ms = {{ "eu" = {v["latency"]} }}

[[pools]]
name = "p1"
site = "s1"
nodes = 2
gpu_model = "A40"
gpus_per_node = 4
node_idle_w = {v["pools.node_idle_w"]}
node_off_w = {v["pools.node_off_w"]}
node_boot_w = {v["pools.node_boot_w"]}
boot_time_min = {v["pools.boot_time_min"]}
min_up_h = {v["pools.min_up_h"]}
min_down_h = {v["pools.min_down_h"]}
load_quantile = {v["pools.load_quantile"]}

[[jobs]]
id = "inline-1"
gpus = 2
work_gpu_h = {v["jobs.work_gpu_h"]}
release = "2026-03-02T00:00:00Z"
deadline = "2026-03-02T10:00:00Z"
priority = {v["jobs.priority"]}
user_region = "eu"
max_latency_ms = {v["jobs.max_latency_ms"]}
"""


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "carbon.csv").write_text(CARBON)
    (tmp_path / "jobs.csv").write_text(JOBS)
    p = tmp_path / "fleet.toml"
    p.write_text(text)
    return p


def test_the_base_config_loads(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, _toml(BASE)))
    assert len(cfg.jobs) == 1


FLOAT_FIELDS = [k for k in BASE if k != "horizon.slots"]


@pytest.mark.parametrize("key", FLOAT_FIELDS)
@pytest.mark.parametrize("bad", ["inf", "+inf", "nan"])
def test_inf_and_nan_are_refused_in_every_numeric_field(tmp_path: Path, key: str, bad: str) -> None:
    p = _write(tmp_path, _toml({**BASE, key: bad}))
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "fleet.toml" in msg and "finite" in msg, msg
    field = key.split(".")[-1] if key != "latency" else "latency_ms"
    assert field in msg, msg


def test_inf_in_a_per_slot_list_is_refused(tmp_path: Path) -> None:
    p = _write(tmp_path, _toml({**BASE, "sites.power_budget_kw": "[" + "50.0, " * 11 + "inf]"}))
    with pytest.raises(ConfigError, match=r"power_budget_kw.*finite"):
        load_config(p)


def test_inf_in_the_jobs_csv_is_refused_with_its_line(tmp_path: Path) -> None:
    p = _write(tmp_path, _toml(BASE, jobs_file="jobs.csv"))
    (tmp_path / "jobs.csv").write_text(
        JOBS + "j2,2,inf,2026-03-02T00:00:00Z,2026-03-02T12:00:00Z\n"
    )
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "jobs.csv:3" in msg and "work_gpu_h" in msg and "finite" in msg, msg


def test_empty_jobs_file_is_refused(tmp_path: Path) -> None:
    p = _write(tmp_path, _toml(BASE, jobs_file=""))
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "jobs_file" in msg and "empty" in msg, msg


def test_carbon_file_that_is_a_directory(tmp_path: Path) -> None:
    p = _write(tmp_path, _toml(BASE).replace('file = "carbon.csv"', 'file = "data"'))
    (tmp_path / "data").mkdir()
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "carbon.file" in msg and "directory" in msg and str(tmp_path / "data") in msg, msg


@pytest.mark.parametrize("start", ["2026-03-02T00:30:00Z", "2026-03-02T00:00:01Z"])
def test_horizon_start_off_the_slot_grid(tmp_path: Path, start: str) -> None:
    p = _write(
        tmp_path, _toml(BASE).replace('start = "2026-03-02T00:00:00Z"', f'start = "{start}"')
    )
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "horizon.start" in msg and "slot grid" in msg and "2026-03-02T00:00:00Z" in msg, msg
    assert "extend the carbon file" not in msg


def test_horizon_start_on_a_30_minute_grid_is_fine(tmp_path: Path) -> None:
    text = _toml(BASE).replace('start = "2026-03-02T00:00:00Z"', 'start = "2026-03-02T00:30:00Z"')
    text = text.replace("slots = 12", "slots = 12\nslot_minutes = 30")
    assert load_config(_write(tmp_path, text)).raw.horizon.start is not None
