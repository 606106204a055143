"""Build hook: ship the top-level ``models/`` profiles inside the wheel.

``models/gpus/*.toml`` and ``models/nodes/*.toml`` stay the source of truth at the top of the
repository (where ``models/fit_gpu_profiles.py`` writes them). A wheel (and so a plain
``pip install .``) copies them to ``greencpn/_models/{gpus,nodes}/``, which
``greencpn.config.default_models_dir`` finds when the source tree is not there. Editable
installs read ``models/`` directly. Everything else is in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
PROFILE_DIRS = ("gpus", "nodes")


class BuildPyWithModels(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        for sub in PROFILE_DIRS:
            src = HERE / "models" / sub
            dest = Path(self.build_lib) / "greencpn" / "_models" / sub
            dest.mkdir(parents=True, exist_ok=True)
            files = sorted(src.glob("*.toml"))
            if not files:
                raise SystemExit(f"setup.py: no profiles in {src}; the wheel would be useless")
            for f in files:
                shutil.copy2(f, dest / f.name)


setup(cmdclass={"build_py": BuildPyWithModels})
