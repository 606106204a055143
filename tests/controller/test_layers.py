"""The architecture's layers hold (the .importlinter contracts) and no module import cycles."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_import_linter_contracts_are_kept():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    if not Path(exe).exists():
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    out = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:]
    assert "3 kept, 0 broken" in out.stdout


def test_no_import_cycles_between_modules():
    grimp = pytest.importorskip("grimp")
    g = grimp.build_graph("greencpn")
    cycles = set()
    for m in g.modules:
        for d in g.find_modules_directly_imported_by(m):
            if g.chain_exists(importer=d, imported=m):
                cycles.add(tuple(sorted((m, d))))
    assert not cycles, sorted(cycles)


def test_optimize_imports_no_sources_or_actuate():
    grimp = pytest.importorskip("grimp")
    g = grimp.build_graph("greencpn")
    for layer in ("greencpn.sources", "greencpn.actuate", "greencpn.controller"):
        assert not g.chain_exists(importer="greencpn.optimize", imported=layer, as_packages=True)
