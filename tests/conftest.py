"""Fixtures shared by several test folders.

``slurm`` (module scope): a REAL Slurm 22.05 cluster on 127.0.0.1 (tests/slurm_cluster.py) —
munged, slurmctld and one slurmd (``slurmd -N node1``) with all state in a temp dir
(``SLURM_CONF``); cloud nodes ``fake[1-4]`` start powered down.

A test module adapts the cluster with module attributes:

* ``SLURM_NODE1_EXTRA`` — extra words on node1's ``NodeName`` line (e.g. ``Feature=green``);
* ``SLURM_EXTRA_CONF`` — extra slurm.conf lines (partitions, scheduler parameters);
* ``SLURM_MAIN_PARTITION_EXTRA`` — extra words on the ``main`` partition line;
* ``SLURM_ACCOUNTING = True`` — also MariaDB + slurmdbd, so ``sacct`` works (~8 s more).

Used by tests/actuate_nodes (node hooks) and tests/actuate_jobs (job actuation).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

_spec = importlib.util.spec_from_file_location(
    "greencpn_tests_slurm_cluster", Path(__file__).with_name("slurm_cluster.py")
)
assert _spec is not None and _spec.loader is not None
slurm_cluster = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = slurm_cluster
_spec.loader.exec_module(slurm_cluster)

if TYPE_CHECKING:
    from slurm_cluster import SlurmCluster


@pytest.fixture(scope="module")
def slurm(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SlurmCluster]:
    accounting = getattr(request.module, "SLURM_ACCOUNTING", False)
    why = slurm_cluster.missing_reason(accounting)
    if why:
        pytest.skip(why)
    with slurm_cluster.start_slurm_cluster(
        tmp_path_factory.mktemp("slurm"),
        node1_extra=getattr(request.module, "SLURM_NODE1_EXTRA", ""),
        main_extra=getattr(request.module, "SLURM_MAIN_PARTITION_EXTRA", ""),
        extra_conf=getattr(request.module, "SLURM_EXTRA_CONF", ""),
        accounting=accounting,
    ) as cluster:
        yield cluster
