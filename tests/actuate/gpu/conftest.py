"""Fixtures for the GPU actuation tests.

* ``fake_nvml_path`` (session): fake_nvml.c compiled with gcc into a temporary folder.
* ``fake_nvml`` (function): the fake library loaded into this process and reset to 4 GPUs;
  pynvml's own ``CDLL("libnvidia-ml.so.1")`` resolves to it (same SONAME, already loaded).
* ``--run-gpu`` (or ``GREENCPN_RUN_GPU=1``; tests/conftest.py): run the tests marked ``gpu`` on
  real hardware.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

HERE = Path(__file__).parent


def _load_ctl() -> ModuleType:
    name = "greencpn_tests_fake_nvml_ctl"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / "fake_nvml" / "fake_nvml_ctl.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


ctl = _load_ctl()


@pytest.fixture(scope="session")
def fake_nvml_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        return ctl.build(tmp_path_factory.mktemp("fake_nvml"))
    except ctl.BuildError as exc:
        pytest.skip(f"cannot build the fake libnvidia-ml.so.1: {exc}")


@pytest.fixture(scope="session")
def _fake_nvml_loaded(fake_nvml_path: Path):  # -> FakeNvml
    import pynvml

    fake = ctl.FakeNvml(fake_nvml_path)
    if pynvml.nvmlLib is not None and pynvml.nvmlLib._handle != fake.lib._handle:
        pytest.fail(
            "pynvml is already bound to another libnvidia-ml in this process; "
            "refusing to run fake-NVML tests against it"
        )
    return fake


@pytest.fixture
def fake_nvml(_fake_nvml_loaded):  # -> FakeNvml
    """The fake NVML library with 4 default GPUs (100..400 W, limit 400 W), fresh counters."""
    fake = _fake_nvml_loaded
    fake.reset(4)
    yield fake
    fake.clear_errors()
    # a test that leaked an initialised backend must not affect the next one
    while fake.init_refcount() > 0:
        fake.lib.nvmlShutdown()
    # pynvml stays bound to the fake in this process: make it look like "no driver" to
    # whatever runs next (other areas' tests expect none on this machine)
    fake.disarm()
