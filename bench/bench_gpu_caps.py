"""Benchmark: apply power caps to 64 GPUs through the real pynvml path (fake libnvidia-ml.so.1).

Target (issue 4): first apply and re-apply each <= 100 ms.

Measured, each repeated ``--repeats`` times:
  * first apply  — new NvmlGpuBackend (nvmlInit, handles, ranges) + apply_power_limits on 64 GPUs,
                   every cap changing (fake reset to 400 W first);
  * re-apply     — the same caps again on that backend: reads only, no NVML write;
  * change apply — other caps on the warm backend (every GPU written);
  * list_gpus    — identity, limits and clock tables of 64 GPUs;
  * cold process — a fresh Python process: import greencpn + pynvml, init, first apply
                   (timed inside the process, so interpreter start-up is excluded).

Run:  .venv/bin/python bench/bench_gpu_caps.py [--repeats 50] [--write bench/results/gpu.md]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

N_GPUS = 64
TARGET_MS = 100.0


def _ctl():
    spec = importlib.util.spec_from_file_location(
        "fake_nvml_ctl", REPO / "tests" / "actuate" / "gpu" / "fake_nvml" / "fake_nvml_ctl.py"
    )
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _caps(offset: int) -> dict[int, float]:
    # 64 distinct caps inside 100..400 W, all below the 400 W default
    return {i: 150.0 + ((i * 7 + offset) % 50) * 4.5 for i in range(N_GPUS)}


def _stats(xs_ms: list[float]) -> dict[str, float]:
    xs = sorted(xs_ms)
    return {
        "median": statistics.median(xs),
        "p95": xs[min(len(xs) - 1, int(0.95 * len(xs)))],
        "min": xs[0],
        "max": xs[-1],
    }


COLD = r"""
import json, time
t0 = time.perf_counter()
from greencpn.actuate.gpu import get_gpu_backend
from greencpn.actuate.gpu.base import apply_power_limits
import pynvml  # noqa: F401
t1 = time.perf_counter()
b = get_gpu_backend("nvml")
r = apply_power_limits(b, {i: 150.0 + ((i * 7) % 50) * 4.5 for i in range(64)})
t2 = time.perf_counter()
assert r.ok and sum(c.changed for c in r.changes) == 64
b.close()
print(json.dumps({"import_ms": (t1 - t0) * 1e3, "init_apply_ms": (t2 - t1) * 1e3}))
"""


def run(repeats: int) -> dict:
    ctl = _ctl()
    tmp = Path(tempfile.mkdtemp(prefix="bench_gpu_"))
    lib_path = ctl.build(tmp)
    fake = ctl.FakeNvml(lib_path)  # loaded first: pynvml's CDLL("libnvidia-ml.so.1") binds to it
    from greencpn.actuate.gpu.base import apply_power_limits
    from greencpn.actuate.gpu.nvml import NvmlGpuBackend

    first, reapply, change, listing = [], [], [], []
    for r in range(repeats):
        fake.reset(N_GPUS)
        caps = _caps(r)
        t0 = time.perf_counter()
        backend = NvmlGpuBackend()
        res = apply_power_limits(backend, caps)
        t1 = time.perf_counter()
        assert res.ok and sum(c.changed for c in res.changes) == N_GPUS
        assert all(fake.limit_mw(i) == round(caps[i] * 1000) for i in range(N_GPUS))
        writes = fake.calls("nvmlDeviceSetPowerManagementLimit")
        t2 = time.perf_counter()
        res2 = apply_power_limits(backend, caps)
        t3 = time.perf_counter()
        assert res2.ok and not any(c.changed for c in res2.changes)
        assert fake.calls("nvmlDeviceSetPowerManagementLimit") == writes  # no write on re-apply
        caps3 = {i: c + 10.0 for i, c in caps.items()}
        t4 = time.perf_counter()
        res3 = apply_power_limits(backend, caps3)
        t5 = time.perf_counter()
        assert res3.ok and sum(c.changed for c in res3.changes) == N_GPUS
        t6 = time.perf_counter()
        gpus = backend.list_gpus()
        t7 = time.perf_counter()
        assert len(gpus) == N_GPUS
        backend.close()
        first.append((t1 - t0) * 1e3)
        reapply.append((t3 - t2) * 1e3)
        change.append((t5 - t4) * 1e3)
        listing.append((t7 - t6) * 1e3)

    cold = []
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD",)}
    env.update(LD_LIBRARY_PATH=str(tmp), FAKE_NVML_GPUS=str(N_GPUS), PYTHONPATH=str(REPO))
    for _ in range(5):
        proc = subprocess.run(
            [sys.executable, "-c", COLD],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
            check=True,
        )
        cold.append(json.loads(proc.stdout))
    return {
        "first_apply_ms": _stats(first),
        "reapply_ms": _stats(reapply),
        "change_apply_ms": _stats(change),
        "list_gpus_ms": _stats(listing),
        "cold_import_ms": _stats([c["import_ms"] for c in cold]),
        "cold_init_apply_ms": _stats([c["init_apply_ms"] for c in cold]),
        "repeats": repeats,
    }


def markdown(res: dict) -> str:
    from importlib.metadata import version

    def row(name: str, key: str, target: bool) -> str:
        s = res[key]
        verdict = ("yes" if s["max"] <= TARGET_MS else "NO") if target else "—"
        return (
            f"| {name} | {s['median']:.2f} | {s['p95']:.2f} | {s['min']:.2f} | "
            f"{s['max']:.2f} | {verdict} |"
        )

    return "\n".join(
        [
            "## GPU power caps: 64 GPUs through the real pynvml path",
            "",
            f"Measured {time.strftime('%Y-%m-%d', time.gmtime())} by `bench/bench_gpu_caps.py` on this "
            f"machine: {os.cpu_count()} cores (`nproc`), {platform.machine()}, Linux "
            f"{platform.release()}, Python {platform.python_version()}, nvidia-ml-py "
            f"{version('nvidia-ml-py')}. NVML is the fake `libnvidia-ml.so.1` built from "
            "`tests/actuate/gpu/fake_nvml/fake_nvml.c`, loaded by pynvml's own "
            '`CDLL("libnvidia-ml.so.1")`; so this measures greencpn + pynvml + ctypes. The time a '
            "real driver spends inside each NVML call is not included (not measured: no GPU here). "
            "The machine is shared with other jobs, which shows in the max column.",
            "",
            f"{res['repeats']} repeats (cold process: 5). Times in ms. Target: ≤ {TARGET_MS:.0f} ms "
            "for first apply and re-apply.",
            "",
            "| step | median | p95 | min | max | max ≤ target |",
            "|---|---:|---:|---:|---:|---|",
            row("first apply (nvmlInit + 64 caps, all changed)", "first_apply_ms", True),
            row("re-apply same 64 caps (reads only, 0 writes)", "reapply_ms", True),
            row("apply 64 new caps on a warm backend", "change_apply_ms", False),
            row("list_gpus (64 GPUs, with clock tables)", "list_gpus_ms", False),
            row("cold process: import greencpn.actuate + pynvml", "cold_import_ms", False),
            row("cold process: nvmlInit + first apply of 64 caps", "cold_init_apply_ms", True),
            "",
        ]
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--write", type=Path, help="write the Markdown section to this file")
    args = ap.parse_args()
    res = run(args.repeats)
    text = markdown(res)
    print(text)
    if args.write:
        args.write.write_text(text)
    ok = all(
        res[k]["max"] <= TARGET_MS for k in ("first_apply_ms", "reapply_ms", "cold_init_apply_ms")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
