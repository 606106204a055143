"""A wheel built from the tree, installed in a fresh venv, plans the example fleet.

Reproduces issue #10 item 1: a non-editable install had no ``models/gpus`` so every config
failed with ``unknown GPU model … use one of []``. The wheel is built offline from a copy of
the tree (``--no-build-isolation``: setuptools and wheel come from the dev extras), installed
with ``--no-deps`` into a venv of the base interpreter, and run from a directory outside the
tree with the test venv's site-packages on ``PYTHONPATH`` for the dependencies only (that
directory holds no ``greencpn`` package: the editable install is a ``.pth`` hook, which
``PYTHONPATH`` entries do not process).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

TREE_ITEMS = ("greencpn", "models", "pyproject.toml", "setup.py", "MANIFEST.in", "README.md")


def _copy_tree(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "_models")
    for item in TREE_ITEMS:
        src = REPO / item
        if src.is_dir():
            shutil.copytree(src, dest / item, ignore=ignore)
        else:
            shutil.copy2(src, dest / item)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    try:
        import setuptools
        import wheel  # noqa: F401
    except ImportError:
        pytest.skip("setuptools/wheel not installed (pip install -e '.[dev]')")
    if tuple(int(x) for x in setuptools.__version__.split(".")[:2]) < (77, 0):
        pytest.skip(f"setuptools {setuptools.__version__} < 77 (pip install -e '.[dev]')")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    _copy_tree(src)
    dist = tmp / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", str(dist), str(src)],
        check=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    wheels = list(dist.glob("greencpn-*.whl"))
    assert len(wheels) == 1, wheels
    venv = tmp / "venv"
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run(
        [base, "-m", "venv", "--without-pip", str(venv)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    vpy = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(vpy), "install", "-q", "--no-deps",
         "--no-index", str(wheels[0])],
        check=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return {"wheel": wheels[0], "venv": venv, "python": vpy, "tmp": tmp}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = sysconfig.get_paths()["purelib"]  # dependencies only
    env.pop("PYTHONHOME", None)
    return env


def test_wheel_ships_gpu_and_node_profiles(installed: dict[str, Path]) -> None:
    names = zipfile.ZipFile(installed["wheel"]).namelist()
    for sub in ("gpus", "nodes"):
        want = sorted(p.name for p in (REPO / "models" / sub).glob("*.toml"))
        got = sorted(n.rsplit("/", 1)[1] for n in names if n.startswith(f"greencpn/_models/{sub}/"))
        assert got == want, sub


def test_installed_wheel_plans_the_example_outside_the_tree(installed: dict[str, Path]) -> None:
    work = installed["tmp"] / "user"
    shutil.copytree(REPO / "data" / "example", work / "example")
    env = _env()
    where = subprocess.run(
        [str(installed["python"]), "-c",
         "import greencpn.config as c; print(c.__file__); print(c.default_models_dir('gpus'))"],
        cwd=work, env=env, capture_output=True, text=True, timeout=60, check=True,
    ).stdout.split()  # fmt: skip
    assert where[0].startswith(str(installed["venv"])), where  # the wheel, not the tree
    assert where[1].startswith(str(installed["venv"])), where  # its packaged profiles
    exe = installed["venv"] / "bin" / "greencpn"
    out = work / "out"
    res = subprocess.run(
        [str(exe), "plan", "--config", "example/fleet.toml", "--out", str(out)],
        cwd=work, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]

    def no_constant(token: str) -> None:
        raise AssertionError(f"plan.json is not strict JSON: {token}")

    plan = json.loads((out / "plan.json").read_text(), parse_constant=no_constant)
    assert plan["jobs"], "the example plan places no job"


def test_installed_python_dash_m_and_slurm_scripts(installed: dict[str, Path]) -> None:
    env = _env()
    res = subprocess.run(
        [str(installed["python"]), "-m", "greencpn", "--version"],
        cwd=installed["tmp"], env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 0 and res.stdout.startswith("greencpn "), res.stderr
    for script in ("greencpn-slurm-suspend", "greencpn-slurm-resume"):
        exe = installed["venv"] / "bin" / script
        assert exe.is_file(), script
        res = subprocess.run(
            [str(exe), "--help"], env=env, capture_output=True, text=True, timeout=60
        )
        assert res.returncode == 0 and "HOSTLIST" in res.stdout.upper(), res.stdout + res.stderr
