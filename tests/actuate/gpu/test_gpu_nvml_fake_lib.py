"""NvmlGpuBackend through the REAL pynvml bindings against the fake libnvidia-ml.so.1 (C)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from greencpn.actuate import gpu as gpu_factory
from greencpn.actuate.base import GpuBackend
from greencpn.actuate.gpu import errors as gpu
from greencpn.actuate.gpu import get_gpu_backend
from greencpn.actuate.gpu.base import apply_power_limits
from greencpn.actuate.gpu.errors import (
    GpuDriverError,
    GpuInvalidArgumentError,
    GpuLostError,
    GpuNotFoundError,
    GpuNotSupportedError,
    GpuPermissionError,
    GpuTemporaryError,
    PowerLimitOutOfRangeError,
)
from greencpn.actuate.gpu.nvml import NvmlGpuBackend
from greencpn.errors import PermanentError, TemporaryError

REPO = Path(__file__).resolve().parents[3]
SET = "nvmlDeviceSetPowerManagementLimit"


@pytest.fixture
def backend(fake_nvml):
    b = NvmlGpuBackend()
    yield b
    b.close()


def test_pynvml_itself_loaded_the_fake_by_soname(backend, fake_nvml):
    import pynvml

    assert pynvml.nvmlLib._name == "libnvidia-ml.so.1"  # pynvml's own CDLL call
    assert pynvml.nvmlLib._handle == fake_nvml.lib._handle  # ... resolved to the fake
    assert backend.driver_version() == "550.54.15-fake"
    assert fake_nvml.calls("nvmlInitWithFlags") == 1
    assert isinstance(backend, GpuBackend)


def test_list_gpus_converts_mw_to_w(backend, fake_nvml):
    fake_nvml.set_gpu(
        0,
        name="NVIDIA H100 80GB HBM3",
        uuid="GPU-aaaa",
        min_mw=200_000,
        max_mw=700_000,
        default_mw=700_000,
        limit_mw=550_500,
    )
    fake_nvml.set_gpu(
        1,
        name="Tesla V100-PCIE-32GB",
        uuid="GPU-bbbb",
        min_mw=100_000,
        max_mw=250_000,
        default_mw=250_000,
        limit_mw=187_500,
    )
    gpus = backend.list_gpus()
    assert [g.index for g in gpus] == [0, 1, 2, 3]
    h100, v100 = gpus[0], gpus[1]
    assert (h100.name, h100.uuid) == ("NVIDIA H100 80GB HBM3", "GPU-aaaa")
    assert (h100.power_limit_min_w, h100.power_limit_max_w) == (200.0, 700.0)
    assert (h100.power_limit_default_w, h100.power_limit_current_w) == (700.0, 550.5)
    assert (v100.name, v100.power_limit_current_w, v100.power_limit_max_w) == (
        "Tesla V100-PCIE-32GB",
        187.5,
        250.0,
    )
    # union of the graphics clocks over both memory clocks of the fake, highest first
    assert h100.supported_graphics_clocks_mhz == (
        1410,
        1395,
        1380,
        1200,
        1005,
        810,
        615,
        420,
        405,
        210,
    )


def test_set_power_limit_writes_milliwatts(backend, fake_nvml):
    change = backend.set_power_limit_w(2, 212.5)
    assert fake_nvml.limit_mw(2) == 212_500
    assert (change.target, change.what, change.before, change.after, change.changed) == (
        "gpu2",
        "power_limit_w",
        400.0,
        212.5,
        True,
    )
    assert change.message == "power limit 400 W -> 212.5 W"
    assert fake_nvml.limit_mw(1) == 400_000  # others untouched
    assert backend.power_limit_w(2) == 212.5


def test_read_before_write_is_a_noop(backend, fake_nvml):
    backend.set_power_limit_w(0, 300)
    assert fake_nvml.calls(SET) == 1
    again = backend.set_power_limit_w(0, 300.0)
    assert not again.changed and again.message == "already 300 W"
    assert (again.before, again.after) == (300.0, 300.0)
    assert fake_nvml.calls(SET) == 1  # no second write
    # a limit changed behind our back is noticed (read each time, not cached)
    fake_nvml.set_gpu(0, limit_mw=250_000)
    assert backend.set_power_limit_w(0, 300).changed
    assert fake_nvml.calls(SET) == 2


def test_out_of_range_raises_without_writing(backend, fake_nvml):
    with pytest.raises(PowerLimitOutOfRangeError) as ei:
        backend.set_power_limit_w(1, 450)
    err = ei.value
    assert isinstance(err, PermanentError) and isinstance(err, GpuInvalidArgumentError)
    assert (err.min_w, err.max_w, err.requested_w, err.gpu_index) == (100.0, 400.0, 450.0, 1)
    assert "[100, 400] W" in str(err)
    with pytest.raises(PowerLimitOutOfRangeError):
        backend.set_power_limit_w(1, 99.999)
    with pytest.raises(GpuInvalidArgumentError, match="finite"):
        backend.set_power_limit_w(1, float("nan"))
    assert fake_nvml.calls(SET) == 0
    assert fake_nvml.limit_mw(1) == 400_000


def test_clamp_only_when_allowed(backend, fake_nvml, caplog):
    with caplog.at_level(logging.WARNING, logger="greencpn.actuate.gpu.base"):
        low = backend.set_power_limit_w(1, 50, allow_clamp=True)
    assert fake_nvml.limit_mw(1) == 100_000
    assert low.changed and low.after == 100.0 and "clamped 50 W to 100 W" in low.message
    assert "clamped 50 W to 100 W" in caplog.text
    high = backend.set_power_limit_w(1, 1000, allow_clamp=True)
    assert fake_nvml.limit_mw(1) == 400_000 and high.after == 400.0


def test_driver_invalid_argument_names_the_range(backend, fake_nvml):
    fake_nvml.inject(SET, gpu.NVML_ERROR_INVALID_ARGUMENT)
    with pytest.raises(GpuInvalidArgumentError) as ei:
        backend.set_power_limit_w(0, 200)
    assert ei.value.nvml_code == 2
    assert "device range [100, 400] W" in str(ei.value) and "asked 200 W" in str(ei.value)


def test_no_permission_says_run_as_root(backend, fake_nvml):
    fake_nvml.inject(SET, gpu.NVML_ERROR_NO_PERMISSION)
    with pytest.raises(GpuPermissionError) as ei:
        backend.set_power_limit_w(3, 200)
    err = ei.value
    assert isinstance(err, PermanentError) and not isinstance(err, TemporaryError)
    assert err.nvml_code == 4 and err.gpu_index == 3 and err.operation == "set_power_limit_w"
    assert "run as root or through the greencpn agent" in str(err)
    assert fake_nvml.limit_mw(3) == 400_000
    # the injection was for one call only: the next write goes through
    assert backend.set_power_limit_w(3, 200).changed


def test_gpu_lost_is_temporary(backend, fake_nvml):
    fake_nvml.inject("nvmlDeviceGetPowerManagementLimit", gpu.NVML_ERROR_GPU_IS_LOST)
    with pytest.raises(GpuLostError) as ei:
        backend.set_power_limit_w(0, 200)
    assert isinstance(ei.value, TemporaryError)
    assert "GPU is lost" in str(ei.value) and "retry later" in str(ei.value)
    assert fake_nvml.calls(SET) == 0


def test_not_supported_is_permanent(backend, fake_nvml):
    fake_nvml.inject(SET, gpu.NVML_ERROR_NOT_SUPPORTED)
    with pytest.raises(GpuNotSupportedError) as ei:
        backend.set_power_limit_w(0, 200)
    assert isinstance(ei.value, PermanentError)


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (gpu.NVML_ERROR_TIMEOUT, TemporaryError),
        (gpu.NVML_ERROR_UNKNOWN, TemporaryError),
        (gpu.NVML_ERROR_GPU_IS_LOST, TemporaryError),
        (gpu.NVML_ERROR_NO_PERMISSION, PermanentError),
        (gpu.NVML_ERROR_NOT_SUPPORTED, PermanentError),
        (gpu.NVML_ERROR_DRIVER_NOT_LOADED, PermanentError),
    ],
)
def test_injected_codes_through_pynvml_map_to_typed_errors(backend, fake_nvml, code, kind):
    fake_nvml.inject("nvmlDeviceGetPowerUsage", code)
    with pytest.raises(kind) as ei:
        backend.power_w(1)
    assert ei.value.nvml_code == code and ei.value.gpu_index == 1


def test_unsupported_clock_table_lists_no_clocks(backend, fake_nvml):
    fake_nvml.inject("nvmlDeviceGetSupportedMemoryClocks", gpu.NVML_ERROR_NOT_SUPPORTED)
    gpus = backend.list_gpus()
    assert gpus[0].supported_graphics_clocks_mhz == ()
    assert gpus[1].supported_graphics_clocks_mhz[0] == 1410


def test_lock_and_reset_clocks(backend, fake_nvml):
    ch = backend.lock_clocks_mhz(1, 210, 1005)
    assert ch.changed and fake_nvml.locked_clocks(1) == (210, 1005)
    assert ch.before == "unknown" and ch.after == (210, 1005)
    again = backend.lock_clocks_mhz(1, 210, 1005)
    assert not again.changed and again.message == "already locked to 210-1005 MHz"
    assert fake_nvml.calls("nvmlDeviceSetGpuLockedClocks") == 1
    reset = backend.reset_clocks(1)
    assert reset.changed and reset.before == (210, 1005)
    assert fake_nvml.locked_clocks(1) == (0, 0)
    assert not backend.reset_clocks(1).changed
    assert fake_nvml.calls("nvmlDeviceResetGpuLockedClocks") == 1
    with pytest.raises(GpuInvalidArgumentError, match="invalid"):
        backend.lock_clocks_mhz(1, 1005, 210)
    with pytest.raises(GpuInvalidArgumentError, match="supported graphics clocks"):
        backend.lock_clocks_mhz(1, 3000, 3500)
    assert fake_nvml.calls("nvmlDeviceSetGpuLockedClocks") == 1


def test_power_and_energy_counter(backend, fake_nvml):
    fake_nvml.set_gpu(0, demand_mw=312_345, energy_mj=123_456_789)
    assert backend.power_w(0) == 312.345
    assert backend.energy_j(0) == 123_456.789
    backend.set_power_limit_w(0, 250)
    assert backend.power_w(0) == 250.0  # the fake's draw is capped by the limit
    big = 5 * 2**32 + 7  # beyond 32 bits: the counter is an unsigned long long
    fake_nvml.set_energy_mj(0, big)
    assert backend.energy_j(0) == big / 1000


def test_restore_defaults(backend, fake_nvml):
    fake_nvml.set_gpu(2, default_mw=300_000, max_mw=350_000)
    for i, cap in enumerate([150, 200, 250, 120]):
        backend.set_power_limit_w(i, cap)
    backend.lock_clocks_mhz(0, 420, 810)
    changes = backend.restore_defaults()
    assert [fake_nvml.limit_mw(i) for i in range(4)] == [400_000, 400_000, 300_000, 400_000]
    assert fake_nvml.locked_clocks(0) == (0, 0)
    assert sum(c.changed for c in changes if c.what == "power_limit_w") == 4
    # restoring twice changes nothing
    assert not any(c.changed for c in backend.restore_defaults())


def test_restore_defaults_carries_on_past_a_lost_gpu(backend, fake_nvml):
    for i in range(4):
        backend.set_power_limit_w(i, 150)
    fake_nvml.inject(SET, gpu.NVML_ERROR_GPU_IS_LOST, times=1)  # the first GPU's write fails
    with pytest.raises(GpuLostError):
        backend.restore_defaults()
    assert [fake_nvml.limit_mw(i) for i in range(4)] == [150_000, 400_000, 400_000, 400_000]


def test_bad_index(backend):
    with pytest.raises(GpuNotFoundError, match="indices 0..3"):
        backend.set_power_limit_w(4, 200)


def test_apply_power_limits_lowers_before_raising(backend, fake_nvml):
    backend.set_power_limit_w(0, 300)
    backend.set_power_limit_w(1, 300)
    result = apply_power_limits(backend, {0: 350, 1: 200, 2: 400})
    assert result.ok
    assert [(c.target, c.changed) for c in result.changes] == [
        ("gpu1", True),
        ("gpu2", False),
        ("gpu0", True),
    ]
    assert [fake_nvml.limit_mw(i) for i in range(3)] == [350_000, 200_000, 400_000]


def test_apply_power_limits_skips_raises_after_a_failed_lowering(backend, fake_nvml):
    backend.set_power_limit_w(0, 300)
    fake_nvml.inject(SET, gpu.NVML_ERROR_NO_PERMISSION, times=1)
    result = apply_power_limits(backend, {0: 350, 1: 200})
    assert not result.ok
    assert isinstance(result.errors[1], GpuPermissionError)
    assert result.skipped == [0] and result.changes == []
    assert fake_nvml.limit_mw(0) == 300_000  # not raised while the lowering failed


def test_init_errors_are_typed(fake_nvml):
    fake_nvml.inject("nvmlInitWithFlags", gpu.NVML_ERROR_DRIVER_NOT_LOADED)
    with pytest.raises(GpuDriverError, match="no NVIDIA driver"):
        get_gpu_backend("nvml")
    with pytest.raises(GpuDriverError, match="cannot load"):
        NvmlGpuBackend(library_path="/nonexistent/libnvidia-ml.so.1")


def test_close_shuts_nvml_down(fake_nvml):
    with get_gpu_backend("nvml") as b:
        assert fake_nvml.init_refcount() == 1
        b.list_gpus()
    assert fake_nvml.init_refcount() == 0 and b.closed


def test_uninitialised_is_temporary(backend, fake_nvml):
    backend.list_gpus()
    fake_nvml.lib.nvmlShutdown()  # someone shut NVML down underneath us
    with pytest.raises(GpuTemporaryError, match="not initialised"):
        backend.power_w(0)
    fake_nvml.lib.nvmlInitWithFlags(0)


def _run(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "LD_PRELOAD")}
    full.update(env)
    full["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=60
    )


def test_unmodified_loader_path_in_a_subprocess_with_state_file(fake_nvml_path, tmp_path):
    """LD_LIBRARY_PATH only: pynvml's plain CDLL finds the fake; state persists via a file."""
    state = tmp_path / "state.tsv"
    state.write_text(
        "gpu\tNVIDIA A40\tGPU-a40-0\t100000\t300000\t300000\t300000\t200000\t42000\t0\t0\n"
        "gpu\tNVIDIA A40\tGPU-a40-1\t100000\t300000\t300000\t300000\t200000\t43000\t0\t0\n"
    )
    env = {"LD_LIBRARY_PATH": str(fake_nvml_path.parent), "FAKE_NVML_STATE": str(state)}
    code = (
        "from greencpn.actuate.gpu import get_gpu_backend\n"
        "b = get_gpu_backend('nvml')\n"
        "print([g.uuid for g in b.list_gpus()])\n"
        "print(b.set_power_limit_w(1, 180).message)\n"
        "print(b.energy_j(1))\n"
    )
    first = _run(code, env)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == [
        "['GPU-a40-0', 'GPU-a40-1']",
        "power limit 300 W -> 180 W",
        "43.0",
    ]
    assert "\t180000\t" in state.read_text().splitlines()[1]
    second = _run(code, env)  # a new process sees the cap already there
    assert second.stdout.splitlines()[1] == "already 180 W"


def test_no_driver_in_a_subprocess(tmp_path):
    code = (
        "import sys\n"
        "from greencpn.actuate.gpu.errors import GpuDriverError\nfrom greencpn.actuate.gpu import get_gpu_backend, nvml_available\n"
        "print(nvml_available())\n"
        "try:\n    get_gpu_backend('nvml')\n"
        "except GpuDriverError as e:\n    print(type(e).__name__, e)\n"
    )
    proc = _run(code, {"LD_LIBRARY_PATH": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    if lines[0] == "True":
        pytest.skip("a real NVIDIA driver is installed here")
    assert lines[0] == "False"
    assert (
        lines[1].startswith("GpuDriverError NVML: init failed") and "no NVIDIA driver" in lines[1]
    )


def test_importing_greencpn_does_not_import_pynvml():
    code = (
        "import sys, greencpn, greencpn.actuate.gpu, greencpn.actuate.gpu.nvml, "
        "greencpn.actuate.gpu.fake\nprint('pynvml' in sys.modules)\n"
    )
    proc = _run(code, {})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_disarmed_fake_looks_like_no_driver(fake_nvml):
    fake_nvml.disarm()  # what the fixture does after each test
    with pytest.raises(GpuDriverError, match="no NVIDIA driver"):
        get_gpu_backend("nvml")
    assert not gpu_factory.nvml_available()
