"""``greencpn models fit``: regenerate GPU profiles from power-limit sweeps or from the fleet.

* ``greencpn models fit --data DIR [--out DIR] [--table]`` — from Zeus-format sweeps
  (``summary_power_*.csv``), the bundled profiles (same as ``models/fit_gpu_profiles.py``);
* ``greencpn models fit --from-ledger FILE [--models-dir DIR] [--out DIR] [--per-workload]`` —
  from the job measurements the GPU meter wrote (NVML energy counters + durations), one refit
  profile per GPU model measured; device facts come from the profiles in ``--models-dir``;
  ``--per-workload`` adds each recurring workload's own curve as a workload class, its levels
  with ``throughput_low`` bounds at ``--confidence`` (default 0.9).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from greencpn.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help="fit GPU power-cap profiles (from sweeps or from the fleet's measurements)",
        description="Fit GPU power-cap profiles; see models/README.md for the method.",
    )
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    f = msub.add_parser(
        "fit",
        help="regenerate profiles",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Regenerate GPU power-cap profiles (method: models/README.md).\n\n"
        "  --data DIR          from Zeus-format sweeps (summary_power_*.csv): the bundled\n"
        "                      profiles, as models/fit_gpu_profiles.py\n"
        "  --from-ledger FILE  from the job measurements the GPU meter wrote (NVML energy\n"
        "                      counters and durations): one profile per GPU model measured,\n"
        "                      device facts kept from --models-dir",
    )
    src = f.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, help="folder with Zeus summary_power_*.csv sweeps")
    src.add_argument(
        "--from-ledger",
        type=Path,
        metavar="FILE",
        help="JSON-lines job measurements written by the GPU meter (MeasurementStore)",
    )
    f.add_argument(
        "--models-dir",
        type=Path,
        default=None,
        help="profiles whose device facts a ledger refit keeps (default: the bundled ones)",
    )
    f.add_argument(
        "--per-workload",
        action="store_true",
        help="with --from-ledger: also write each recurring workload's own measured curve as a "
        "workload class named after it (jobs of that workload name it as workload_class)",
    )
    f.add_argument(
        "--confidence",
        type=float,
        default=None,
        help="with --per-workload: one-sided confidence (0.5-1, default 0.9) of the "
        "throughput_low bounds the per-job cap chooser tests deadlines with",
    )
    f.add_argument("--out", type=Path, default=Path("models/gpus"), help="where to write *.toml")
    f.add_argument("--table", action="store_true", help="with --data: print the fit table")
    f.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.data is not None:
        from greencpn.gpumodels.fit import write_bundle

        if not args.data.is_dir():
            raise ConfigError(
                "sweep folder not found",
                source=str(args.data),
                fix="pass --data DIR holding summary_power_{v100,a40,p100,rtx6000}.csv",
            )
        try:
            lines = write_bundle(args.data, args.out, args.table)
        except (OSError, KeyError, ValueError) as exc:
            raise ConfigError(
                f"cannot fit the sweeps: {exc}",
                source=str(args.data),
                fix="give Zeus-format CSVs (dataset,network,batch_size,optimizer,power_limit,"
                "time_per_epoch,average_power)",
            ) from None
        print("\n".join(lines))
        return 0
    from greencpn.actuate.gpu.meter import read_measurements
    from greencpn.config import default_models_dir, load_gpu_models
    from greencpn.gpumodels.ledger import DEFAULT_CONFIDENCE, refit

    confidence = DEFAULT_CONFIDENCE if args.confidence is None else args.confidence
    if not 0.5 < confidence < 1.0:
        raise ConfigError(
            f"--confidence {args.confidence:g} is outside (0.5, 1)",
            field="--confidence",
            fix="pass a one-sided confidence between 0.5 and 1, e.g. --confidence 0.95 "
            "(or leave it out)",
        )
    ms = read_measurements(args.from_ledger)
    models_dir = args.models_dir or default_models_dir("gpus")
    try:
        fits = refit(
            ms,
            load_gpu_models(models_dir),
            per_workload=args.per_workload,
            confidence=confidence,
        )
    except ValueError as exc:
        raise ConfigError(
            str(exc),
            source=str(args.from_ledger),
            fix="see models/README.md 'Learned from the fleet'",
        ) from None
    args.out.mkdir(parents=True, exist_ok=True)
    for name, lf in fits.items():
        path = args.out / f"{name.lower()}.toml"
        path.write_text(lf.toml)
        caps = ", ".join(f"{lv.cap_w:g}" for lv in lf.model.levels)
        cls = ", ".join(f"{c} ({n})" for c, n in lf.classes.items()) or "none"
        print(
            f"wrote {path}: {lf.jobs} jobs, {lf.workloads} workloads, caps {caps} W, "
            f"classes {cls}"
            + (f"; left out {lf.skipped_workloads}" if lf.skipped_workloads else "")
            + (
                f"; own curves of {len(lf.workload_curves)} workloads: "
                + ", ".join(lf.workload_curves)
                if lf.workload_curves is not None
                else ""
            )
        )
    return 0
