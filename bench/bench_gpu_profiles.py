"""GPU profile figures (issue #14): energy per unit of work of the fitted levels against the
per-configuration medians, and the share of the per-configuration ≤ 3 % cap saving that one
cap per pool and per-job (class) caps keep, on the Zeus sweeps in ../shared/data/gpu.

    .venv/bin/python bench/bench_gpu_profiles.py [--old-ref main] [--write]

``--old-ref`` names a git revision whose models/gpus/*.toml are shown beside the new ones.
No timing here: every figure is a deterministic function of the data.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from greencpn.config import load_gpu_model  # noqa: E402
from greencpn.gpumodels import fit, share  # noqa: E402
from greencpn.gpumodels.devices import DEVICES  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "gpu"
OUT = REPO / "bench" / "results" / "gpu_profiles.md"


def _old_levels(ref: str, stem: str) -> dict[float, float] | None:
    """cap → (pf/θ)/(pf/θ at top) of the profile at git ``ref`` (None if unavailable)."""
    try:
        text = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{ref}:models/gpus/{stem}.toml"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (subprocess.CalledProcessError, FileNotFoundError):
        return None
    lv = tomllib.loads(text)["levels"]
    top = max(lv, key=lambda x: x["cap_w"])
    ref_e = top["power_factor"] / top["throughput"]
    return {x["cap_w"]: (x["power_factor"] / x["throughput"]) / ref_e for x in lv}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--old-ref", default="main")
    ap.add_argument("--write", action="store_true", help=f"write {OUT.relative_to(REPO)}")
    args = ap.parse_args(argv)
    if not DATA.is_dir():
        print(f"skipped: shared GPU sweep data not found at {DATA}", file=sys.stderr)
        return 0
    out: list[str] = [
        "## Energy per unit of work of the levels vs the per-configuration median",
        "",
    ]
    out.append(
        "E/work = (power_factor / throughput) ÷ the same at the top level; 'median' = median over "
        "configurations of E(cap)/E(top) from the raw sweep; 'old' = the profile at "
        f"`{args.old_ref}` (median θ and median P/P_top taken separately)."
    )
    out += [
        "",
        "| GPU | cap W | configs | per-config median | new profile | old profile |",
        "|---|---|---|---|---|---|",
    ]
    shares: list[str] = [
        "| GPU | configs | per-config limit, mean saving | pool caps: share (within 3 %) | "
        "pool: configs slowed > 3 % | pool cap W | per-job class caps: share (within 3 %) | "
        "per-job: configs slowed > 3 % | per-job caps W (configs) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for d in DEVICES:
        if d.sweep is None:
            continue
        cfgs = list(fit.read_sweep(DATA / f"summary_power_{d.sweep}.csv").values())
        df = fit.fit_device(cfgs, d.power_limit_max_w)
        prof = load_gpu_model(REPO / "models" / "gpus" / f"{d.key}.toml")
        top = prof.levels[-1]
        old = _old_levels(args.old_ref, d.key) or {}
        for lv in prof.levels:
            st = df.all.per_limit[lv.cap_w]
            new_e = (lv.power_factor / lv.throughput) / (top.power_factor / top.throughput)
            o = f"{old[lv.cap_w]:.3f}" if lv.cap_w in old else "(no level)"
            out.append(
                f"| {d.name} | {lv.cap_w:.0f} | {st.n_configs} | {st.e_rel:.3f} | {new_e:.3f} | {o} |"
            )
        r = share.evaluate(cfgs, df.levels, d.power_limit_max_w)
        p, j = r["pool"], r["job"]
        shares.append(
            f"| {d.name} | {p.configs} | {p.limit_sum / p.configs:.3f} | {p.share:.2f} "
            f"({p.share_within:.2f}) | {p.over_slowdown} | {', '.join(f'{c:.0f}' for c in p.caps)} | "
            f"{j.share:.2f} ({j.share_within:.2f}) | {j.over_slowdown} | "
            + ", ".join(f"{c:.0f} ({n})" for c, n in j.caps.items())
            + " |"
        )
    text = "\n".join(
        [
            "# GPU profiles (issue #14) — bench/bench_gpu_profiles.py",
            "",
            *out,
            "",
            "## Share of the per-configuration ≤ 3 % slowdown saving kept",
            "",
            "Per configuration, the limit is its best saving (1 − E(cap)/E(top)) among the profile's "
            "levels that keep it within 3 % of its uncapped speed. Share = Σ savings the policy's "
            "caps give ÷ Σ limits, over the configurations measured at every level. Pool caps: one "
            "level for all, picked from the median curve (least E/work with median θ ≥ 0.97). "
            "Per-job class caps: each configuration's level picked the same way from its class's "
            "curve (light/heavy by uncapped power share), fitted leave-one-out. In brackets: the "
            "share counting 0 for configurations the cap slows by more than 3 % (a tight deadline "
            "missed). Savings can be negative for a configuration (capping costs it energy).",
            "",
            *shares,
            "",
        ]
    )
    print(text)
    if args.write:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(text)
        print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
