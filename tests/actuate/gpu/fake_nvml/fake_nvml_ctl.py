"""Build the fake ``libnvidia-ml.so.1`` (fake_nvml.c) and drive its state through ctypes.

Used by tests/actuate/gpu/conftest.py and bench/bench_gpu_caps.py (loaded by file path).
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).with_name("fake_nvml.c")
SONAME = "libnvidia-ml.so.1"


class BuildError(RuntimeError):
    """gcc is missing or failed."""


def build(out_dir: Path) -> Path:
    """Compile fake_nvml.c into ``out_dir/libnvidia-ml.so.1`` (SONAME set) and return its path."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise BuildError(
            "gcc not found — apt-get install gcc libc6-dev (listed in .ci/apt-packages.txt)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / SONAME
    cmd = [
        gcc,
        "-shared",
        "-fPIC",
        "-O2",
        "-Wall",
        "-Wextra",
        "-Werror",
        f"-Wl,-soname,{SONAME}",
        "-o",
        str(out),
        str(SOURCE),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise BuildError(f"gcc failed ({proc.returncode}):\n{proc.stderr}")
    return out


class FakeNvml:
    """ctypes handle on the loaded fake library: set GPUs, inject errors, read its state.

    Loading it by path before pynvml's first ``CDLL("libnvidia-ml.so.1")`` makes glibc resolve
    pynvml's load to this very library through its SONAME, so the real bindings run against it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lib = ctypes.CDLL(str(path))
        L = self.lib
        L.fake_nvml_reset.argtypes = [ctypes.c_uint]
        L.fake_nvml_set_gpu.argtypes = [
            ctypes.c_uint,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_ulonglong,
        ]
        L.fake_nvml_set_energy_mj.argtypes = [ctypes.c_uint, ctypes.c_ulonglong]
        L.fake_nvml_inject.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
        L.fake_nvml_calls.argtypes = [ctypes.c_char_p]
        L.fake_nvml_calls.restype = ctypes.c_long
        L.fake_nvml_limit_mw.argtypes = [ctypes.c_uint]
        L.fake_nvml_limit_mw.restype = ctypes.c_uint
        L.fake_nvml_locked_clocks.argtypes = [
            ctypes.c_uint,
            ctypes.POINTER(ctypes.c_uint),
            ctypes.POINTER(ctypes.c_uint),
        ]
        L.fake_nvml_save.argtypes = [ctypes.c_char_p]
        L.fake_nvml_load.argtypes = [ctypes.c_char_p]

    def reset(self, count: int) -> None:
        """``count`` default GPUs (A100-like, 100..400 W, limit 400 W), no errors, no counts."""
        self.lib.fake_nvml_reset(count)

    def set_gpu(
        self,
        index: int,
        *,
        name: str = "NVIDIA A100-SXM4-40GB",
        uuid: str | None = None,
        min_mw: int = 100_000,
        max_mw: int = 400_000,
        default_mw: int = 400_000,
        limit_mw: int | None = None,
        demand_mw: int = 250_000,
        energy_mj: int = 0,
    ) -> None:
        """Describe one GPU (units as NVML: mW, mJ)."""
        uuid = uuid or f"GPU-test-{index:04d}"
        limit_mw = default_mw if limit_mw is None else limit_mw
        rc = self.lib.fake_nvml_set_gpu(
            index,
            name.encode(),
            uuid.encode(),
            min_mw,
            max_mw,
            default_mw,
            limit_mw,
            demand_mw,
            energy_mj,
        )
        if rc != 0:
            raise IndexError(index)

    def set_energy_mj(self, index: int, energy_mj: int) -> None:
        self.lib.fake_nvml_set_energy_mj(index, energy_mj)

    def inject(self, function: str, code: int, times: int = 1) -> None:
        """Make the next ``times`` calls of NVML ``function`` return ``code`` (-1: always)."""
        self.lib.fake_nvml_inject(function.encode(), code, times)

    def disarm(self) -> None:
        """Make every later nvmlInit fail with DRIVER_NOT_LOADED (9) until the next reset.

        Once loaded, the fake stays bound to pynvml for the life of the process; disarming it
        keeps later tests (other areas) seeing "no NVIDIA driver", as on a machine without one.
        """
        for fn in ("nvmlInitWithFlags", "nvmlInit_v2", "nvmlInit"):
            self.inject(fn, 9, -1)

    def clear_errors(self) -> None:
        self.lib.fake_nvml_clear_errors()

    def calls(self, function: str) -> int:
        """How often the NVML function was called since the last reset."""
        return int(self.lib.fake_nvml_calls(function.encode()))

    def reset_calls(self) -> None:
        self.lib.fake_nvml_reset_calls()

    def limit_mw(self, index: int) -> int:
        return int(self.lib.fake_nvml_limit_mw(index))

    def locked_clocks(self, index: int) -> tuple[int, int]:
        lo, hi = ctypes.c_uint(), ctypes.c_uint()
        self.lib.fake_nvml_locked_clocks(index, ctypes.byref(lo), ctypes.byref(hi))
        return lo.value, hi.value

    def init_refcount(self) -> int:
        return int(self.lib.fake_nvml_init_refcount())

    def save(self, path: Path) -> None:
        self.lib.fake_nvml_save(str(path).encode())
