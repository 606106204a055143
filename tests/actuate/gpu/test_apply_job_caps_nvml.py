"""Issue #14.3: ``apply`` sets per-job caps per GPU index through NvmlGpuBackend → the REAL
pynvml bindings → the fake libnvidia-ml.so.1 (C): the jobs' GPUs (indices from recorded
``scontrol show job -d`` output) at the job caps, the node's other GPU at the pool cap; an NVML
error on one job's GPU is reported and the other job is still applied; restoring the defaults
puts the job GPUs back too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from greencpn.actuate.apply import Backends
from greencpn.actuate.gpu import errors as gpu
from greencpn.actuate.gpu.nvml import NvmlGpuBackend
from tests.actuate.apply.conftest import World
from tests.actuate.apply.test_job_caps import REC1, REC2, fake_scontrol

SET = "nvmlDeviceSetPowerManagementLimit"


@pytest.fixture
def nvml_world(tmp_path: Path, fake_nvml: Any) -> Any:
    w = World(tmp_path, [dict(name="p", nodes=1, hostlist="node1", gpus_per_node=4)])
    be = NvmlGpuBackend()
    act = fake_scontrol(tmp_path, {"1": REC1, "2": REC2})  # job 1: IDX 0-1, job 2: IDX 2
    w.backends = lambda: Backends(  # type: ignore[method-assign]
        hooks=dict(w.hooks), gpus=lambda n: be if n == "node1" else None, job_gpus=act.job_gpus
    )
    yield w, be
    be.close()


def _plan(w: World, pool_cap: float) -> dict[str, Any]:
    p = w.plan({"p": [(1, pool_cap)] * 3})
    p["jobs"] = [
        {"id": "1", "pool": "p", "gpus": 2, "power_cap_w": 250.0},
        {"id": "2", "pool": "p", "gpus": 1, "power_cap_w": 200.0},
    ]
    return p


def test_job_caps_per_gpu_index_through_pynvml(nvml_world: Any, fake_nvml: Any) -> None:
    w, be = nvml_world
    rep = w.apply(_plan(w, 300.0))
    assert [fake_nvml.limit_mw(i) for i in range(4)] == [250_000, 250_000, 200_000, 300_000]
    assert rep.exit_code == 0 and rep.outcome == "applied", rep.format()
    assert fake_nvml.calls(SET) == 4  # one write per GPU, nothing rewritten
    be.restore_defaults()  # undo / restore on exit covers the job GPUs too
    assert [fake_nvml.limit_mw(i) for i in range(4)] == [400_000] * 4


def test_an_nvml_error_on_one_jobs_gpu_is_reported_the_other_job_applied(
    nvml_world: Any, fake_nvml: Any
) -> None:
    w, _ = nvml_world
    fake_nvml.inject(SET, gpu.NVML_ERROR_NO_PERMISSION, times=1)  # job 1's first write: gpu0
    rep = w.apply(_plan(w, 400.0))  # the pool cap is the default: only the jobs' caps change
    assert [fake_nvml.limit_mw(i) for i in range(4)] == [400_000, 400_000, 200_000, 400_000]
    (err,) = [s for s in rep.steps if s.status == "error"]
    assert err.targets == ("node1:gpu0",) and "job 1's caps left as before" in err.message
    assert "GpuPermissionError" in err.message
    ok = [s for s in rep.steps if s.status == "ok"]
    assert [(s.targets, s.message) for s in ok] == [
        (("node1:gpu2",), "1 GPU(s) to 200 W (job 2's own cap)")
    ]
    assert rep.exit_code == 1 and rep.outcome == "partial"
