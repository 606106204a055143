"""Issue #14.4: profiles learned from the fleet. The fake libnvidia-ml.so.1 serves total-energy
counters that follow a known speed/power curve; jobs are metered through the real NVML backend;
``greencpn models fit --from-ledger`` recovers the curve."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from greencpn.actuate.gpu.meter import (
    JobEnergyMeter,
    MeasurementError,
    MeasurementStore,
    read_measurements,
)
from greencpn.actuate.gpu.nvml import NvmlGpuBackend
from greencpn.cli import main as cli_main
from greencpn.clock import SimClock
from greencpn.errors import ConfigError

MAX_W = 400.0
CAPS = (200.0, 300.0, 400.0)
# the known curve: throughput and board power per GPU (W) at each cap, per class
THR = {
    "heavy": {200.0: 0.70, 300.0: 0.92, 400.0: 1.0},
    "light": {200.0: 0.98, 300.0: 1.0, 400.0: 1.0},
}
SHAPE = {
    "heavy": {200.0: 0.5, 300.0: 0.7, 400.0: 0.8},
    "light": {200.0: 0.27, 300.0: 0.28, 400.0: 0.28},
}
# workloads: (class, power scale k: P = k × SHAPE × MAX_W)
WORKLOADS = {"bert": ("heavy", 1.0), "resnet": ("heavy", 0.9), "recsys": ("light", 1.0)}


@pytest.fixture
def backend(fake_nvml):
    b = NvmlGpuBackend()
    yield b
    b.close()


def _run(fake_nvml, backend, meter, clock, store, job_id, workload, cls, k, cap, gpus=(0, 1)):
    """One job: cap its GPUs, meter it, let the fake counters follow the curve, stop."""
    for i in gpus:
        backend.set_power_limit_w(i, cap)
    work = 8.0  # GPU-h at full power
    meter.start(job_id, list(gpus), work_gpu_h=work, workload=workload, workload_class=cls)
    hours = work / len(gpus) / THR[cls][cap]
    clock.advance(timedelta(hours=hours))
    watts = k * SHAPE[cls][cap] * MAX_W
    for i in gpus:
        before = backend.energy_j(i)
        fake_nvml.set_energy_mj(i, round((before + watts * hours * 3600) * 1000))
    return store.record(meter, job_id)


def test_meter_reads_the_counters_of_the_jobs_gpus(fake_nvml, backend, tmp_path: Path) -> None:
    clock = SimClock(datetime(2026, 12, 1, tzinfo=UTC))
    meter = JobEnergyMeter(backend, clock, backend.list_gpus()[0].name)
    store = MeasurementStore(tmp_path / "m.jsonl")
    m = _run(
        fake_nvml, backend, meter, clock, store, "j1", "bert", "heavy", 1.0, 300.0, gpus=(1, 3)
    )
    assert m is not None
    # 8 GPU-h on 2 GPUs at θ 0.92: 4/0.92 h; 2 GPUs × 0.7 × 400 W over that time
    assert m.duration_s == pytest.approx(4 / 0.92 * 3600)
    assert m.energy_j == pytest.approx(2 * 280.0 * 4 / 0.92 * 3600, rel=1e-9)
    assert m.power_cap_w == 300.0 and m.gpus == 2 and m.gpu_model == "NVIDIA A100-SXM4-40GB"
    assert m.power_w == pytest.approx(280.0)
    assert read_measurements(store.path) == [m]


def test_unusable_measurements_are_not_kept(fake_nvml, backend, tmp_path: Path) -> None:
    clock = SimClock(datetime(2026, 12, 1, tzinfo=UTC))
    meter = JobEnergyMeter(backend, clock, "A100")
    store = MeasurementStore(tmp_path / "m.jsonl")
    backend.set_power_limit_w(0, 300.0)
    meter.start("j", [0], work_gpu_h=1.0)
    clock.advance(timedelta(hours=1))
    backend.set_power_limit_w(0, 200.0)  # cap changed while it ran
    assert store.record(meter, "j") is None
    meter.start("k", [0], work_gpu_h=1.0)
    clock.advance(timedelta(hours=1))
    fake_nvml.set_energy_mj(0, 0)  # counter reset (driver reload)
    with pytest.raises(MeasurementError, match="backwards"):
        meter.stop("k")
    assert not store.path.exists()


def test_refit_from_the_ledger_recovers_the_curve(
    fake_nvml, backend, tmp_path: Path, capsys
) -> None:
    clock = SimClock(datetime(2026, 12, 1, tzinfo=UTC))
    meter = JobEnergyMeter(backend, clock, backend.list_gpus()[0].name)
    store = MeasurementStore(tmp_path / "ledger.jsonl")
    n = 0
    for workload, (cls, k) in WORKLOADS.items():
        for cap in CAPS:
            for _ in range(2):  # repeated runs: the median per cap
                n += 1
                assert _run(
                    fake_nvml,
                    backend,
                    meter,
                    clock,
                    store,
                    f"{workload}-{n}",
                    workload,
                    cls,
                    k,
                    cap,
                )
    # a workload never run uncapped cannot be normalised: left out, and said so
    n += 1
    _run(fake_nvml, backend, meter, clock, store, "once", "odd", "heavy", 1.0, 200.0)

    out = tmp_path / "refit"
    rc = cli_main(["models", "fit", "--from-ledger", str(store.path), "--out", str(out)])
    assert rc == 0
    said = capsys.readouterr().out
    assert "19 jobs, 3 workloads, caps 200, 300, 400 W" in said and "left out ['odd']" in said
    prof = tomllib.loads((out / "a100-sxm4-40gb.toml").read_text())
    assert prof["name"] == "A100-SXM4-40GB" and prof["extrapolated"] is False
    assert prof["power_limit_max_w"] == MAX_W and "Measured by greencpn" in prof["source"]

    def curve(levels):
        return {lv["cap_w"]: (lv["throughput"], lv["power_factor"]) for lv in levels}

    classes = {c["name"]: curve(c["levels"]) for c in prof["workload_classes"]}
    for cls, ks in (("heavy", [1.0, 0.9]), ("light", [1.0])):
        k_med = sorted(ks)[len(ks) // 2] if len(ks) % 2 else sum(ks) / 2
        for cap in CAPS:
            thr, pf = classes[cls][cap]
            assert thr == pytest.approx(THR[cls][cap], abs=1e-3)
            # recovered busy power: the class's median power scale × the known shape
            assert pf == pytest.approx(k_med * SHAPE[cls][cap], abs=1e-3)
    # all workloads together: θ is the median of the three (heavy, heavy, light)
    levels = curve(prof["levels"])
    assert levels[200.0][0] == pytest.approx(0.70, abs=1e-3)
    assert levels[400.0] == (1.0, pytest.approx(0.8 * 0.9 * 1.0, abs=2e-3))


def test_bad_ledger_lines_name_the_line(tmp_path: Path) -> None:
    p = tmp_path / "l.jsonl"
    p.write_text('{"job_id": "x"}\n')
    with pytest.raises(ConfigError, match=r"l\.jsonl:1") as e:
        read_measurements(p)
    assert "MeasurementStore" in str(e.value)


def test_refit_per_workload_from_the_cli_writes_each_recurring_jobs_curve(
    fake_nvml, backend, tmp_path: Path, capsys
) -> None:
    """``--per-workload``: besides the classes, each workload's own curve as a class named
    after it (bert: θ 0.70 / 0.92 / 1.0, power 0.5 / 0.7 / 0.8 × 400 W at 200 / 300 / 400 W)."""
    clock = SimClock(datetime(2026, 12, 1, tzinfo=UTC))
    meter = JobEnergyMeter(backend, clock, backend.list_gpus()[0].name)
    store = MeasurementStore(tmp_path / "ledger.jsonl")
    n = 0
    for workload, (cls, k) in WORKLOADS.items():
        for cap in CAPS:
            n += 1
            _run(fake_nvml, backend, meter, clock, store, f"j{n}", workload, cls, k, cap)
    out = tmp_path / "refit"
    args = ["models", "fit", "--from-ledger", str(store.path), "--out", str(out)]
    assert cli_main([*args, "--per-workload"]) == 0
    said = capsys.readouterr().out
    assert "own curves of 3 workloads: bert, recsys, resnet" in said
    prof = tomllib.loads((out / "a100-sxm4-40gb.toml").read_text())
    classes = {c["name"]: c for c in prof["workload_classes"]}
    assert set(classes) == {"heavy", "light", "bert", "recsys", "resnet"}
    bert = {lv["cap_w"]: (lv["throughput"], lv["power_factor"]) for lv in classes["bert"]["levels"]}
    for cap in CAPS:
        assert bert[cap] == pytest.approx((THR["heavy"][cap], SHAPE["heavy"][cap]), abs=1e-3)
    assert "3 recurring workloads have their own curve" in prof["notes"]
