"""`make bench`: run every benchmark, then gather bench/results/*.md into bench/RESULTS.md.

Each benchmark writes its own section (bench/results/<area>.md) with the machine it ran on;
this script runs them one after another (never in parallel: the machine has 2 cores and the
figures are only comparable when nothing else runs) and concatenates the sections.
Pass names to run only some: `python bench/run_all.py plan gpu`.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PY = sys.executable

BENCHES: dict[str, list[str]] = {
    "plan": [PY, "bench/bench_plan.py", "--write"],
    "forecast": [PY, "bench/forecast_accuracy.py"],
    "carbon_parse": [PY, "bench/bench_carbon_parse.py"],
    "sources_api": [PY, "bench/bench_sources_cache.py", "--write"],
    "load": [PY, "bench/load_forecast_accuracy.py"],
    "gpu": [PY, "bench/bench_gpu_caps.py", "--write", "bench/results/gpu.md"],
    "agent": [PY, "bench/bench_agent.py", "--write"],
    "apply": [PY, "bench/bench_apply.py", "--write", "bench/results/apply.md"],
    "actuate_nodes": [PY, "bench/bench_node_hooks.py", "--write", "bench/results/actuate_nodes.md"],
    "report": [PY, "bench/bench_report_render.py"],
    "safety": [PY, "bench/bench_safety.py", "--before", "ce3fafd", "--write"],
    "jobs": [PY, "bench/bench_jobs.py", "--write", "bench/results/jobs.md"],
    "daemon": [PY, "bench/bench_daemon.py", "--write"],
    "controller": [PY, "bench/bench_controller.py", "--write"],
    "controller_soak": [PY, "bench/bench_controller_soak.py", "--write"],
    "whatif": [PY, "bench/bench_whatif.py"],
    "gpu_profiles": [PY, "bench/bench_gpu_profiles.py", "--old-ref", "e07ec5e", "--write"],
    "stability": [PY, "bench/bench_stability.py"],
}

ORDER = [
    "plan",
    "report",
    "forecast",
    "carbon_parse",
    "sources_api",
    "load",
    "gpu",
    "agent",
    "apply",
    "actuate_nodes",
    "safety",
    "jobs",
    "controller",
    "controller_soak",
    "daemon",
    "whatif",
    "speed",  # the what-if per-slot cost, written by hand from a driver run (see the section)
    "gpu_profiles",
    "stability",
    "test_durations",  # one whole-suite run's durations, written by hand from --durations
    "mutation",  # written by hand from `make mutation` (hours in full: not run by make bench)
]


def gather() -> Path:
    parts = [
        "# Benchmark results",
        "",
        "Gathered by `make bench` (bench/run_all.py) from the sections in bench/results/. Each section "
        "names the machine and the time it was measured; figures are what was measured, on a shared "
        "2-core machine, so compare ratios measured side by side in one run.",
        "",
    ]
    for name in ORDER:
        f = HERE / "results" / f"{name}.md"
        if f.is_file():
            parts.append(f.read_text().strip())
            parts.append("")
    out = HERE / "RESULTS.md"
    out.write_text("\n".join(parts) + "\n")
    return out


def main(argv: list[str]) -> int:
    names = argv or ORDER
    failed = []
    for name in names:
        cmd = BENCHES[name]
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd, cwd=HERE.parent)
        print(f"== {name}: exit {rc} in {time.perf_counter() - t0:.0f} s", flush=True)
        if rc:
            failed.append(name)
    print(f"wrote {gather()}")
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
