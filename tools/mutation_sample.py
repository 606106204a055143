"""Seeded random sample of mutmut mutants in greencpn/optimize/ and greencpn/report/.

The whole scope is ~10,000 mutants (hours per thousand on the shared 2-core VM), so the kill
rate is *estimated* from a random sample drawn with a fixed seed, stratified by package
(optimize/, report/: the same number from each, so each package gets its own estimate):

    make mutation-sample SEED=20261203 N=60
    make mutation-sample SEED=20261205 N=30 TAG=20261205   # files *_20261205, beside the rest

Steps (each is a sub-command; ``all`` runs them in order):

- ``generate``: mutmut 3's own generation step (``mutants/``, one trampoline per function);
- ``stats``: mutmut's stats run alone (which tests call which mutated function, and each
  test's duration: ``mutants/mutmut-stats.json``), as ``mutmut run`` collects them before its
  first mutant, without running one; ``all`` runs it only if the file is missing;
- ``sample``: list every mutant name from mutmut's ``mutants/**/*.py.meta`` files, shuffle each
  package's sorted list with ``random.Random(seed)`` and take the first N/2 of each; the
  list is written to ``bench/results/mutation_sample.txt`` (name, package);
- ``run``: each sampled mutant against mutmut's own selection for it (the tests that called the
  mutated function in mutmut's stats run, ``-x``), one fresh pytest per mutant in
  ``mutants/`` with ``MUTANT_UNDER_TEST`` set and a wall-clock limit (needs
  ``mutants/mutmut-stats.json``: the ``stats`` step);
- ``recheck``: a mutant mutmut calls *survived* may only have escaped mutmut's selection — a
  function called inside a module-scoped fixture is attributed to the first test that set the
  fixture up, so later tests of that module reading the fixture's plan are not selected. Each
  survivor is therefore re-run with ``MUTANT_UNDER_TEST`` set against the whole selection
  (tests/optimize and tests/report, its covering files first); a failure there counts as
  killed (and is listed as "killed on recheck");
- ``report``: counts per package and overall, with Wilson 95 % intervals of the kill share
  (killed / mutants tried; timeouts and "no tests" are *not* counted as killed), written to
  ``bench/results/mutation_sample.json`` and printed as a Markdown table.

A timeout is reported on its own: it is counted as killed only where the mutant's own effect
(e.g. an endless loop) is shown by hand, which this script does not do.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MUTANTS = ROOT / "mutants"
PACKAGES = ("greencpn.optimize", "greencpn.report")
SAMPLE_TXT = ROOT / "bench" / "results" / "mutation_sample.txt"
RESULT_JSON = ROOT / "bench" / "results" / "mutation_sample.json"
RECHECK_JSON = MUTANTS / "mutation_sample_recheck.json"
RESULTS_JSON = MUTANTS / "mutation_sample_results.json"
PYTEST_ARGS = ["-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", "--tb=line"]

# mutmut 3's exit-code meanings (mutmut/stats.py status_by_exit_code), reduced to ours
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests"}
TIMEOUT_CODES = {24, -24, 36, 152, 255}


def use_tag(tag: str) -> None:
    """Write and read ``*_<tag>`` files instead of the fixed names above, so that one seed's
    sample, per-mutant results and rechecks stay beside another's (``--tag 20261205``:
    bench/results/mutation_sample_20261205.{txt,json},
    bench/results/mutation_sample_{results,recheck}_20261205.json)."""
    global SAMPLE_TXT, RESULT_JSON, RECHECK_JSON, RESULTS_JSON
    res = ROOT / "bench" / "results"
    SAMPLE_TXT = res / f"mutation_sample_{tag}.txt"
    RESULT_JSON = res / f"mutation_sample_{tag}.json"
    RESULTS_JSON = res / f"mutation_sample_results_{tag}.json"
    RECHECK_JSON = res / f"mutation_sample_recheck_{tag}.json"


def status_of(exit_code: int | None) -> str:
    if exit_code is None:
        return "not checked"
    if exit_code in TIMEOUT_CODES:
        return "timeout"
    return STATUS.get(exit_code, f"other ({exit_code})")


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of k successes in n trials (95 % for the default z)."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def mutmut_bin() -> str:
    return str(Path(sys.executable).parent / "mutmut")


def generate() -> None:
    """mutmut's own generation step, without running any test."""
    os.chdir(ROOT)
    from mutmut.__main__ import create_mutants
    from mutmut.mutation.trampoline import set_mutant_under_test
    from mutmut.utils.file_utils import copy_also_copy_files, copy_src_dir, setup_source_paths

    set_mutant_under_test("mutant_generation")
    MUTANTS.mkdir(exist_ok=True)
    copy_src_dir()
    copy_also_copy_files()
    setup_source_paths()
    stats = create_mutants(2)
    print(f"generated: {stats.mutated} files mutated, {stats.unmodified} unmodified")


def precompile() -> None:
    """Byte-compile the mutated tree once, before the stats run.

    The stats run is in this process, and this VM's environment sets
    ``PYTHONDONTWRITEBYTECODE``, so no ``.pyc`` is written: each spawned baseline worker
    (optimize/baseline_worker.py, tests/optimize/test_baseline_worker.py) then compiled the
    ~60 MB mutated placement.py afresh, minutes a process under load, and the stats run
    stopped on the tests' 300 s timeout (session 13). A compiled tree is read, not compiled,
    by every later process whatever ``PYTHONDONTWRITEBYTECODE`` says.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    dirs = [str(MUTANTS / "greencpn"), str(MUTANTS / "tests")]
    subprocess.check_call(
        [sys.executable, "-m", "compileall", "-q", "-j", "2", *dirs], env=env, cwd=ROOT
    )


def collect_stats() -> None:
    """mutmut's stats run alone: what ``mutmut run`` does before its first mutant (the
    mutated tree first on ``sys.path``, then the whole selection once with the trampolines
    recording which test calls which function), without running a mutant."""
    os.chdir(ROOT)
    os.environ.setdefault("GREENCPN_HYPOTHESIS_EXAMPLES", "3")
    from mutmut.__main__ import collect_or_load_stats
    from mutmut.utils.file_utils import setup_source_paths
    from mutmut.workers.isolation import get_mutant_runner

    setup_source_paths()
    precompile()
    collect_or_load_stats(get_mutant_runner())
    if not (MUTANTS / "mutmut-stats.json").exists():
        sys.exit("mutmut's stats run wrote no mutants/mutmut-stats.json (see its output above)")
    print("wrote mutants/mutmut-stats.json")


def exit_codes() -> dict[str, int | None]:
    """Every mutant name in scope -> mutmut's recorded exit code (None: not run)."""
    codes: dict[str, int | None] = {}
    for meta in sorted(MUTANTS.glob("greencpn/**/*.py.meta")):
        data = json.loads(meta.read_text())
        codes.update(data["exit_code_by_key"])
    return {k: v for k, v in codes.items() if k.startswith(PACKAGES)}


def package_of(name: str) -> str:
    return next(p for p in PACKAGES if name.startswith(p + "."))


def draw(seed: int, n: int) -> list[str]:
    names = sorted(exit_codes())
    if not names:
        sys.exit("no mutants: run `tools/mutation_sample.py generate` first")
    rng = random.Random(seed)
    chosen: list[str] = []
    for pkg in PACKAGES:
        pool = [m for m in names if package_of(m) == pkg]
        rng.shuffle(pool)
        chosen += pool[: n // len(PACKAGES)]
        print(f"{pkg}: {len(pool)} mutants, {n // len(PACKAGES)} drawn")
    return chosen


def sample(seed: int, n: int) -> list[str]:
    chosen = draw(seed, n)
    total = {pkg: sum(1 for m in exit_codes() if package_of(m) == pkg) for pkg in PACKAGES}
    header = (
        f"# mutation sample: seed {seed}, N {n} (N/2 per package, drawn by "
        f"tools/mutation_sample.py sample); population "
        + ", ".join(f"{pkg} {total[pkg]}" for pkg in PACKAGES)
    )
    SAMPLE_TXT.write_text(header + "\n" + "\n".join(chosen) + "\n")
    print(f"wrote {SAMPLE_TXT.relative_to(ROOT)}")
    return chosen


def read_sample() -> list[str]:
    """The sample, interleaved by package (1st optimize, 1st report, 2nd optimize, ...), so
    the run order keeps any finished prefix a stratified random sample of both packages."""
    lines = SAMPLE_TXT.read_text().splitlines()
    names = [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]
    by_pkg = [[m for m in names if package_of(m) == pkg] for pkg in PACKAGES]
    return [m for group in zip(*by_pkg, strict=True) for m in group]


def covering_tests(name: str) -> list[str]:
    """mutmut's selection for ``name``: the tests that called its function in the stats run."""
    stats = json.loads((MUTANTS / "mutmut-stats.json").read_text())
    func = name.rsplit("__mutmut_", 1)[0]
    return sorted(stats["tests_by_mangled_function_name"].get(func, []))


def estimated_s(tests: list[str]) -> float:
    stats = json.loads((MUTANTS / "mutmut-stats.json").read_text())
    return float(sum(stats["duration_by_test"].get(t, 0.0) for t in tests))


def pytest_env(mutant: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["MUTANT_UNDER_TEST"] = mutant
    env.setdefault("GREENCPN_HYPOTHESIS_EXAMPLES", "3")
    return env


def run_pytest(mutant: str, tests: list[str], wall_s: float) -> tuple[int, float]:
    """pytest in ``mutants/`` with ``mutant`` active: (exit code, wall seconds); 36 on timeout.

    Byte-code caching is left on (``PYTHONDONTWRITEBYTECODE`` dropped): the mutated
    placement.py is ~50 MB of source, which takes minutes to compile in every fresh process.
    """
    cmd = ["nice", "-n", "10", sys.executable, "-m", "pytest", *PYTEST_ARGS, *tests]
    t0 = time.monotonic()
    try:
        rc = subprocess.call(
            cmd,
            cwd=MUTANTS,
            env=pytest_env(mutant),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=wall_s,
        )
    except subprocess.TimeoutExpired:
        rc = 36
    return rc, time.monotonic() - t0


def load_results() -> dict[str, dict[str, Any]]:
    return json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else {}


def run(names: list[str], rerun: bool = False) -> None:
    """Each sampled mutant against mutmut's selection for it, in the sample's order.

    The same selection ``mutmut run`` uses (the covering tests from its stats run,
    ``mutants/mutmut-stats.json``; ``-x``), but one fresh pytest per mutant with a wall-clock
    limit of max(180 s, 3 × (estimate + 30 s)), so that any prefix of the sample is a finished
    random sample. Results go to ``mutants/mutation_sample_results.json`` as they come.
    """
    if not (MUTANTS / "mutmut-stats.json").exists():
        sys.exit(
            "mutants/mutmut-stats.json missing: mutmut's stats run gives each mutant's tests; "
            "run `tools/mutation_sample.py stats` first"
        )
    results = load_results()
    for name in names:
        if name in results and not rerun:
            continue
        tests = covering_tests(name)
        if not tests:
            results[name] = {"exit": 33, "wall_s": 0.0, "tests": 0}
        else:
            wall = max(180.0, 3 * (estimated_s(tests) + 30.0))
            rc, took = run_pytest(name, tests, wall)
            results[name] = {"exit": rc, "wall_s": round(took, 1), "tests": len(tests)}
        RESULTS_JSON.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
        r = results[name]
        print(f"{name}: {status_of(r['exit'])} ({r['wall_s']} s, {r['tests']} tests)", flush=True)


def covering_files(name: str) -> list[str]:
    stats = json.loads((MUTANTS / "mutmut-stats.json").read_text())
    func = name.rsplit("__mutmut_", 1)[0]
    tests = stats["tests_by_mangled_function_name"].get(func, [])
    return sorted({t.split("::", 1)[0] for t in tests})


def recheck_one(name: str) -> tuple[int, float]:
    """The mutant against the whole selection (its covering files first, so a kill is quick)."""
    files = covering_files(name)
    if not files:
        return 33, 0.0
    rest = [
        str(p.relative_to(MUTANTS))
        for d in ("tests/optimize", "tests/report")
        for p in sorted((MUTANTS / d).glob("test_*.py"))
        if str(p.relative_to(MUTANTS)) not in files
    ]
    return run_pytest(name, files + rest, 1800.0)


def recheck(names: list[str]) -> dict[str, int]:
    results = load_results()
    rechecked: dict[str, int] = (
        json.loads(RECHECK_JSON.read_text()) if RECHECK_JSON.exists() else {}
    )
    for name in names:
        if status_of(results.get(name, {}).get("exit")) == "survived" and name not in rechecked:
            rechecked[name], took = recheck_one(name)
            RECHECK_JSON.write_text(json.dumps(rechecked, indent=1, sort_keys=True) + "\n")
            print(f"recheck {name}: {status_of(rechecked[name])} ({took:.0f} s)", flush=True)
    return rechecked


def report(seed: int, names: list[str], rechecked: dict[str, int]) -> dict[str, object]:
    results = load_results()
    names = [m for m in names if m in results]
    codes = {m: results[m]["exit"] for m in names}
    rows: dict[str, dict[str, object]] = {}
    per_mutant: dict[str, str] = {}
    for name in names:
        st = status_of(codes.get(name))
        if st == "survived" and status_of(rechecked.get(name)) == "killed":
            st = "killed on recheck"
        per_mutant[name] = st
    for label, members in [
        *((p, [m for m in names if package_of(m) == p]) for p in PACKAGES),
        ("all", names),
    ]:
        counts: dict[str, int] = {}
        for m in members:
            counts[per_mutant[m]] = counts.get(per_mutant[m], 0) + 1
        killed = counts.get("killed", 0) + counts.get("killed on recheck", 0)
        low, high = wilson(killed, len(members))
        rows[label] = {
            "tried": len(members),
            "counts": counts,
            "killed": killed,
            "ci95": [low, high],
        }
    doc = {"seed": seed, "mutants": per_mutant, "summary": rows}
    RESULT_JSON.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    print(
        "| package | mutants in sample | killed | survived | timeout | no tests | kill share (Wilson 95 %) |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    for label, r in rows.items():
        c = r["counts"]
        assert isinstance(c, dict)
        low, high = r["ci95"]  # type: ignore[misc]
        share = r["killed"] / r["tried"] if r["tried"] else 0.0  # type: ignore[operator]
        print(
            f"| {label} | {r['tried']} | {r['killed']} | {c.get('survived', 0)} | "
            f"{c.get('timeout', 0)} | {c.get('no tests', 0)} | "
            f"{share:.0%} ({low:.0%}–{high:.0%}) |"
        )
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "step", choices=["generate", "stats", "sample", "run", "recheck", "report", "all"]
    )
    ap.add_argument("--seed", type=int, default=20261203)
    ap.add_argument("--n", type=int, default=60, help="mutants in the sample (N/2 per package)")
    ap.add_argument("--rerun", action="store_true", help="run: also the mutants with a result")
    ap.add_argument(
        "--tag",
        help="write and read bench/results/mutation_sample_*<TAG>* files (sample, summary, "
        "per-mutant results, rechecks) instead of the fixed names, e.g. --tag 20261205",
    )
    args = ap.parse_args(argv)
    os.chdir(ROOT)
    if args.tag:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", args.tag):
            ap.error(f"--tag {args.tag!r}: use letters, digits, '_' or '-' (part of a file name)")
        use_tag(args.tag)
    if args.step in ("generate", "all"):
        generate()
    if args.step == "stats" or (
        args.step == "all" and not (MUTANTS / "mutmut-stats.json").exists()
    ):
        collect_stats()
    if args.step in ("sample", "all"):
        sample(args.seed, args.n)
    names = read_sample() if SAMPLE_TXT.exists() else []
    if args.step in ("run", "all"):
        run(names, args.rerun)
    if args.step in ("recheck", "all"):
        recheck(names)
    rechecked = json.loads(RECHECK_JSON.read_text()) if RECHECK_JSON.exists() else {}
    if args.step in ("report", "recheck", "all"):
        report(args.seed, names, rechecked)
    return 0


if __name__ == "__main__":
    sys.exit(main())
