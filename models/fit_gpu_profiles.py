"""Regenerate models/gpus/*.toml from the Zeus sweeps (same as `greencpn models fit`).

The method lives in :mod:`greencpn.gpumodels.fit` (so the fleet refit reuses it) and is
described in models/README.md. Reads ``../shared/data/gpu/summary_power_*.csv`` relative to
the repository root, or ``--data DIR``; deterministic (tests/models checks the committed files).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from greencpn.gpumodels.fit import write_bundle  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "gpu"
OUT_DIR = REPO / "models" / "gpus"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="folder with summary_power_*.csv"
    )
    ap.add_argument("--out", type=Path, default=OUT_DIR, help="where to write the TOML files")
    ap.add_argument("--table", action="store_true", help="print the fit table (Markdown)")
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(
            f"error: {args.data} not found; pass --data DIR with summary_power_*.csv",
            file=sys.stderr,
        )
        return 2
    for line in write_bundle(args.data, args.out, args.table):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
