"""``make test`` ends by naming the real services that were missing (tests/conftest.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

pytest_plugins = ["pytester"]

TESTS = Path(__file__).resolve().parents[1]


def test_summary_names_missing_services_and_counts_their_skips(pytester) -> None:
    shutil.copy(TESTS / "conftest.py", pytester.path / "conftest.py")
    shutil.copy(TESTS / "slurm_cluster.py", pytester.path / "slurm_cluster.py")
    pytester.makepyfile(
        test_skips="""
import pytest
def test_prom(): pytest.skip("prometheus/promtool not installed (Debian package 'prometheus')")
def test_prom2(): pytest.skip("prometheus not installed (Debian package 'prometheus')")
def test_etcd(): pytest.skip("etcd not installed (Debian package 'etcd-server')")
def test_other(): pytest.skip("a real NVIDIA driver is installed here")
def test_ok(): pass
"""
    )
    res = pytester.runpytest("-ra", "-p", "no:cacheprovider")
    res.assert_outcomes(passed=1, skipped=4)
    out = res.stdout.str()
    assert "MISSING REAL SERVICES" in out
    assert "Prometheus: 2 test(s) skipped" in out and "etcd: 1 test(s) skipped" in out
    assert "greencpn: 3 test(s) did NOT run because a real service was missing" in out
    # at the end: after pytest's own short summary
    assert out.index("MISSING REAL SERVICES") > out.index("short test summary info")


def test_no_missing_service_says_so(pytester) -> None:
    shutil.copy(TESTS / "conftest.py", pytester.path / "conftest.py")
    shutil.copy(TESTS / "slurm_cluster.py", pytester.path / "slurm_cluster.py")
    pytester.makepyfile(test_fine="def test_ok():\n    pass\n")
    res = pytester.runpytest("-p", "no:cacheprovider")
    res.assert_outcomes(passed=1)
    assert "MISSING REAL SERVICES" not in res.stdout.str()
    assert "greencpn: no test skipped for a missing real service" in res.stdout.str()


def test_summary_counts_the_skips_of_every_xdist_worker(pytester) -> None:
    """``make test`` runs on pytest-xdist workers (Makefile): the skips are reported by the
    workers, the summary is written once, by the controller, over all of them."""
    shutil.copy(TESTS / "conftest.py", pytester.path / "conftest.py")
    shutil.copy(TESTS / "slurm_cluster.py", pytester.path / "slurm_cluster.py")
    for name in ("a", "b"):  # two files: --dist loadfile gives each worker one
        pytester.makepyfile(
            **{
                f"test_skips_{name}": """
import pytest
def test_prom(): pytest.skip("prometheus not installed (Debian package 'prometheus')")
def test_etcd(): pytest.skip("etcd not installed (Debian package 'etcd-server')")
def test_ok(): pass
"""
            }
        )
    res = pytester.runpytest(
        "-ra", "-p", "no:cacheprovider", "-n", "2", "--dist", "loadfile", "--no-loadscope-reorder"
    )
    res.assert_outcomes(passed=2, skipped=4)
    out = res.stdout.str()
    assert "2 workers [6 items]" in out
    assert out.count("MISSING REAL SERVICES") == 1
    assert "Prometheus: 2 test(s) skipped" in out and "etcd: 2 test(s) skipped" in out
    assert "greencpn: 4 test(s) did NOT run because a real service was missing" in out
    assert out.index("MISSING REAL SERVICES") > out.index("short test summary info")
