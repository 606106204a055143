"""Shared GPU logic on the in-memory FakeGpuBackend, the factory and the NVML error table."""

from __future__ import annotations

import pytest

from greencpn.actuate.base import GpuBackend
from greencpn.actuate.gpu import errors as gpu
from greencpn.actuate.gpu import get_gpu_backend
from greencpn.actuate.gpu.base import apply_power_limits
from greencpn.actuate.gpu.errors import (
    GpuInvalidArgumentError,
    GpuLostError,
    GpuNotFoundError,
    GpuPermanentError,
    GpuPermissionError,
    GpuTemporaryError,
    PowerLimitOutOfRangeError,
    error_from_nvml_code,
)
from greencpn.actuate.gpu.fake import FakeFleetGpus, FakeGpu, FakeGpuBackend
from greencpn.errors import PermanentError, TemporaryError


def two_gpus() -> FakeGpuBackend:
    return FakeGpuBackend(
        [
            FakeGpu(min_w=100, max_w=300, default_w=300, demand_w=280),
            FakeGpu(name="NVIDIA A40", min_w=100, max_w=300, default_w=300, energy_j=12.5),
        ]
    )


def test_is_a_gpu_backend_and_lists():
    b = two_gpus()
    assert isinstance(b, GpuBackend) and b.name == "fake"
    infos = b.list_gpus()
    assert [(g.index, g.uuid, g.name) for g in infos] == [
        (0, "GPU-fake-0000", "NVIDIA A100-SXM4-40GB"),
        (1, "GPU-fake-0001", "NVIDIA A40"),
    ]
    assert infos[1].power_limit_current_w == 300.0 and infos[1].power_limit_min_w == 100.0


def test_set_then_reapply_changes_nothing():
    b = two_gpus()
    first = b.set_power_limit_w(0, 200)
    assert first.changed and (first.before, first.after) == (300.0, 200.0)
    assert b.gpus[0].limit_w == 200.0
    again = b.set_power_limit_w(0, 200)
    assert not again.changed and again.message == "already 200 W"
    assert b.calls["set_limit"] == 1


def test_out_of_range_and_clamp():
    b = two_gpus()
    with pytest.raises(
        PowerLimitOutOfRangeError, match=r"350 W is outside the device range \[100, 300\] W"
    ):
        b.set_power_limit_w(0, 350)
    assert b.calls["set_limit"] == 0
    ch = b.set_power_limit_w(0, 350, allow_clamp=True)
    assert (
        ch.after == 300.0
        and not ch.changed
        and ch.message == "already 300 W; clamped 350 W to 300 W (device range [100, 300] W)"
    )
    ch = b.set_power_limit_w(0, 20, allow_clamp=True)
    assert ch.changed and b.gpus[0].limit_w == 100.0


def test_milliwatt_rounding_is_read_before_write_stable():
    b = two_gpus()
    b.set_power_limit_w(0, 212.3456)
    assert b.gpus[0].limit_w == 212.346
    assert not b.set_power_limit_w(0, 212.3459).changed  # same mW


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), "abc", None])
def test_non_numbers_refused(bad):
    with pytest.raises(GpuInvalidArgumentError):
        two_gpus().set_power_limit_w(0, bad)


@pytest.mark.parametrize("index", [-1, 2, True, 1.0])
def test_bad_indices(index):
    with pytest.raises(GpuNotFoundError):
        two_gpus().power_w(index)


def test_power_energy():
    b = two_gpus()
    assert b.power_w(0) == 280.0
    b.set_power_limit_w(0, 150)
    assert b.power_w(0) == 150.0
    assert b.energy_j(1) == 12.5


def test_injected_codes_use_the_nvml_mapping():
    b = two_gpus()
    b.inject_error("set_limit", gpu.NVML_ERROR_NO_PERMISSION)
    with pytest.raises(GpuPermissionError, match="run as root or through the greencpn agent"):
        b.set_power_limit_w(0, 200)
    assert b.gpus[0].limit_w == 300.0
    b.inject_error("limit", gpu.NVML_ERROR_GPU_IS_LOST, times=2)
    for _ in range(2):
        with pytest.raises(GpuLostError):
            b.set_power_limit_w(0, 200)
    assert b.set_power_limit_w(0, 200).changed  # injection used up
    b.inject_error("power", RuntimeError("boom"), times=-1)
    for _ in range(3):
        with pytest.raises(RuntimeError):
            b.power_w(1)
    b.clear_errors()
    assert b.power_w(1) == 250.0
    with pytest.raises(ValueError, match="unknown operation"):
        b.inject_error("nope", 1)


def test_clock_lock_bookkeeping():
    b = two_gpus()
    assert b.reset_clocks(0).changed  # state unknown -> sent
    assert not b.reset_clocks(0).changed
    assert b.lock_clocks_mhz(0, 420, 1005).changed and b.gpus[0].locked_mhz == (420, 1005)
    assert not b.lock_clocks_mhz(0, 420, 1005).changed
    assert b.lock_clocks_mhz(0, 210, 1005).changed
    assert b.calls["lock_clocks"] == 2
    with pytest.raises(GpuInvalidArgumentError):
        b.lock_clocks_mhz(0, -5, 100)


def test_restore_defaults_after_caps_and_locks():
    b = two_gpus()
    b.set_power_limit_w(0, 150)
    b.set_power_limit_w(1, 120)
    b.lock_clocks_mhz(1, 210, 615)
    changes = b.restore_defaults()
    assert [g.limit_w for g in b.gpus] == [300.0, 300.0]
    assert b.gpus[1].locked_mhz is None
    assert [(c.target, c.what, c.changed) for c in changes] == [
        ("gpu0", "power_limit_w", True),
        ("gpu0", "locked_clocks_mhz", True),
        ("gpu1", "power_limit_w", True),
        ("gpu1", "locked_clocks_mhz", True),
    ]


def test_apply_power_limits_order_and_noop():
    b = FakeGpuBackend([FakeGpu(limit_w=300), FakeGpu(limit_w=300), FakeGpu(limit_w=300)])
    r = apply_power_limits(b, {0: 400, 1: 150, 2: 200})
    assert r.ok and [c.target for c in r.changes] == ["gpu1", "gpu2", "gpu0"]
    r2 = apply_power_limits(b, {0: 400, 1: 150, 2: 200})
    assert r2.ok and not any(c.changed for c in r2.changes)
    assert b.calls["set_limit"] == 3


def test_apply_power_limits_out_of_range_is_reported_not_raised():
    b = two_gpus()
    r = apply_power_limits(b, {0: 500, 1: 200})
    assert isinstance(r.errors[0], PowerLimitOutOfRangeError)
    assert [c.target for c in r.changes] == ["gpu1"] and not r.ok
    r = apply_power_limits(b, {0: 500}, allow_clamp=True)
    assert r.ok and r.changes[0].after == 300.0


def test_fleet_helper():
    fleet = FakeFleetGpus(gpus_per_node=4)
    a = fleet.backend("gpu001")
    assert fleet.backend("gpu001") is a and len(a.list_gpus()) == 4
    assert a.list_gpus()[3].uuid == "GPU-gpu001-3"


def test_factory():
    assert isinstance(get_gpu_backend("fake"), FakeGpuBackend)
    assert len(get_gpu_backend("FAKE", gpus=[FakeGpu()]).list_gpus()) == 1
    with pytest.raises(GpuInvalidArgumentError, match="use 'nvml' or 'fake'"):
        get_gpu_backend("amd")


def test_context_manager_closes():
    with two_gpus() as b:
        assert not b.closed
    assert b.closed


# --- the NVML error table -------------------------------------------------------------------


def _pynvml_codes() -> dict[str, int]:
    import pynvml

    return {n: getattr(pynvml, n) for n in dir(pynvml) if n.startswith("NVML_ERROR_")}


def test_our_code_constants_match_pynvml():
    for name, value in _pynvml_codes().items():
        if hasattr(gpu, name):
            assert getattr(gpu, name) == value, name
    ours = {n for n in dir(gpu) if n.startswith("NVML_ERROR_")}
    assert ours <= set(_pynvml_codes())


def test_every_pynvml_code_maps_to_a_typed_error_with_advice():
    for name, code in _pynvml_codes().items():
        err = error_from_nvml_code(code, operation="set_power_limit_w", gpu_index=0)
        assert isinstance(err, GpuPermanentError | GpuTemporaryError), name
        assert isinstance(err, PermanentError) != isinstance(err, TemporaryError), name
        assert err.nvml_code == code and f"(NVML code {code}) — " in str(err), name


@pytest.mark.parametrize(
    ("code", "cls", "advice"),
    [
        (
            gpu.NVML_ERROR_NO_PERMISSION,
            GpuPermissionError,
            "run as root or through the greencpn agent",
        ),
        (gpu.NVML_ERROR_NOT_SUPPORTED, gpu.GpuNotSupportedError, "leave this GPU out"),
        (gpu.NVML_ERROR_GPU_IS_LOST, GpuLostError, "retry later"),
        (gpu.NVML_ERROR_UNKNOWN, GpuTemporaryError, "retry later"),
        (gpu.NVML_ERROR_TIMEOUT, GpuTemporaryError, "retry later"),
        (gpu.NVML_ERROR_INVALID_ARGUMENT, GpuInvalidArgumentError, "inside the device's range"),
        (gpu.NVML_ERROR_DRIVER_NOT_LOADED, gpu.GpuDriverError, "no NVIDIA driver"),
        (gpu.NVML_ERROR_LIBRARY_NOT_FOUND, gpu.GpuDriverError, "no NVIDIA driver"),
        (12345, GpuTemporaryError, "unrecognised NVML error code 12345"),
    ],
)
def test_brief_mapping(code, cls, advice):
    err = error_from_nvml_code(code, operation="op", gpu_index=3, detail="range [1, 2] W")
    assert type(err) is cls
    assert advice in str(err) and str(err).startswith("gpu3: op failed: ")
    assert "range [1, 2] W" in str(err)


def test_fleet_helper_copies_the_whole_template():
    fleet = FakeFleetGpus(
        gpus_per_node=2,
        template=FakeGpu(min_w=100, max_w=400, default_w=400, limit_w=250, energy_j=7.0),
    )
    b = fleet.backend("n1")
    assert [g.power_limit_current_w for g in b.list_gpus()] == [250.0, 250.0]
    assert b.energy_j(1) == 7.0
    b.set_power_limit_w(0, 300)
    assert fleet.template.limit_w == 250  # GPUs are copies, not the template itself
    assert fleet.backend("n2").gpus[0].limit_w == 250


def test_concurrent_identical_sets_write_once():
    import threading
    import time

    class SlowRead(FakeGpuBackend):
        def _limit_mw(self, index: int) -> int:
            value = super()._limit_mw(index)
            time.sleep(0.002)  # widen the window between reading and writing
            return value

    b = SlowRead([FakeGpu()])
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(b.set_power_limit_w(0, 200)))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert b.calls["set_limit"] == 1
    assert sum(c.changed for c in results) == 1 and len(results) == 8


def test_injected_error_names_the_public_operation():
    b = two_gpus()
    b.inject_error("set_limit", gpu.NVML_ERROR_NO_PERMISSION)
    with pytest.raises(GpuPermissionError) as ei:
        b.set_power_limit_w(1, 200)
    assert ei.value.operation == "set_power_limit_w" and ei.value.gpu_index == 1
