"""Options, fixtures and guards shared by every test folder.

* ``--run-gpu`` (or ``GREENCPN_RUN_GPU=1``): also run the tests marked ``gpu`` (a real NVIDIA
  GPU); without it they skip with that reason.
* ``START`` and ``sim_clock``: the tests' common start (2026-01-05 00:00 UTC) and a fresh
  :class:`~greencpn.clock.SimClock` one minute after it — time is passed in, never read.
* The loopback guard (autouse, every test): a socket connect or send to an address that is not
  loopback raises :class:`NonLoopbackError` (an ``OSError``, as a refused network would be), and
  ``GREENCPN_LOOPBACK_ONLY=1`` makes the Wake-on-LAN hook refuse such addresses itself. Tests
  talk to real services on 127.0.0.1 only; processes they start are not guarded this way (they
  are given 127.0.0.1 addresses).

``slurm`` (module scope): a REAL Slurm 22.05 cluster on 127.0.0.1 (tests/slurm_cluster.py) —
munged, slurmctld and one slurmd (``slurmd -N node1``) with all state in a temp dir
(``SLURM_CONF``); cloud nodes ``fake[1-4]`` start powered down.

A test module adapts the cluster with module attributes:

* ``SLURM_NODE1_EXTRA`` — extra words on node1's ``NodeName`` line (e.g. ``Feature=green``);
* ``SLURM_EXTRA_CONF`` — extra slurm.conf lines (partitions, scheduler parameters);
* ``SLURM_MAIN_PARTITION_EXTRA`` — extra words on the ``main`` partition line;
* ``SLURM_GRES_CONF`` — a ``gres.conf`` beside ``slurm.conf`` (GPUs counted without devices);
* ``SLURM_ACCOUNTING = True`` — also MariaDB + slurmdbd, so ``sacct`` works (~8 s more).

Used by tests/actuate/nodes (node hooks) and tests/actuate/jobs (job actuation).
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import socket
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from greencpn.clock import SimClock
from tests.common import START


# --------------------------------------------------------------------------- options
def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-gpu",
        action="store_true",
        default=False,
        help="run tests that need a real NVIDIA GPU (marker: gpu); or GREENCPN_RUN_GPU=1",
    )


def run_gpu(config: pytest.Config) -> bool:
    """Whether the tests marked ``gpu`` run (``--run-gpu`` or ``GREENCPN_RUN_GPU=1``)."""
    return bool(config.getoption("--run-gpu")) or os.environ.get("GREENCPN_RUN_GPU") == "1"


@pytest.fixture(autouse=True)
def _skip_gpu_unless_asked(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("gpu") and not run_gpu(request.config):
        pytest.skip("needs a real NVIDIA GPU: run with --run-gpu or GREENCPN_RUN_GPU=1")


# --------------------------------------------------------------------------- clocks
@pytest.fixture
def sim_clock() -> SimClock:
    """A simulated clock one minute after :data:`START` (the controller's first slot)."""
    return SimClock(START + timedelta(minutes=1))


# --------------------------------------------------------------------------- loopback guard
class NonLoopbackError(OSError):
    """A test tried to reach an address other than loopback."""


def _loopback(address: Any) -> bool:
    """True for an AF_INET/AF_INET6 address tuple on loopback (or ``localhost``), and for
    anything that is not an IP address tuple (a Unix socket path, an abstract name)."""
    if not isinstance(address, tuple) or not address:
        return True
    host = address[0]
    if isinstance(host, bytes):
        host = host.decode()
    if not isinstance(host, str):
        return True
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False  # a host name: only localhost is loopback by name


def _guarded(original: Any, what: str, arg: int) -> Any:
    def call(self: socket.socket, *args: Any) -> Any:
        inet = self.family in (socket.AF_INET, socket.AF_INET6)
        if inet and len(args) > arg and not _loopback(args[arg]):
            raise NonLoopbackError(
                f"tests may only reach loopback addresses; {what} to {args[arg]!r} refused "
                "(tests/conftest.py loopback guard)"
            )
        return original(self, *args)

    return call


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GREENCPN_LOOPBACK_ONLY", "1")
    for name, arg in (("connect", 0), ("connect_ex", 0), ("sendto", -1)):
        original = getattr(socket.socket, name)
        monkeypatch.setattr(socket.socket, name, _guarded(original, name, arg))


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
        gres_conf=getattr(request.module, "SLURM_GRES_CONF", ""),
    ) as cluster:
        yield cluster


# --------------------------------------------------------------------------- xdist order
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist (``make test`` runs ``-n 2 --dist loadfile --no-loadscope-reorder``),
    hand out the files with tests marked ``slow`` (real Slurm, etcd, daemons: minutes of wall
    time each) first, so no long file starts last and runs alone at the end. A stable sort of
    whole files: the order inside each file, and a plain ``pytest`` run's order, are unchanged."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)


# --------------------------------------------------------------------------- missing services
#: real services (and real data) the suite starts or reads, with the words their skip reasons
#: use; a skipped test whose reason matches one counts against that service in the summary
SERVICES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    (
        "Slurm (slurmctld/slurmd/munge)",
        ("slurm binaries missing", "slurmctld"),
        "slurmctld slurmd slurm-client munge",
    ),
    ("MariaDB + slurmdbd", ("mariadb", "slurmdbd"), "mariadb-server slurmdbd"),
    (
        "IPMI simulator (ipmi_sim/ipmitool)",
        ("openipmi", "ipmi_sim", "ipmitool"),
        "openipmi ipmitool",
    ),
    ("Prometheus", ("prometheus",), "prometheus"),
    ("etcd", ("etcd",), "etcd-server etcd-client"),
    ("Chromium", ("chromium",), "chromium"),
    ("openssl CLI", ("openssl",), "openssl"),
    ("real GPU", ("real nvidia gpu", "--run-gpu"), "(a machine with an NVIDIA GPU)"),
    (
        "shared real data (../shared/data)",
        ("shared", "real data", "real trace", "data absent", "not laid out", "philly"),
        "(the project's shared/ folder)",
    ),
)


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def missing_services(reasons: list[str]) -> dict[str, tuple[int, str]]:
    """Service name → (skipped tests, what installs it), for the skip reasons given."""
    out: dict[str, tuple[int, str]] = {}
    for reason in reasons:
        low = reason.lower()
        for name, words, install in SERVICES:
            if any(w in low for w in words):
                n, _ = out.get(name, (0, install))
                out[name] = (n + 1, install)
                break
    return out


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter, exitstatus, config):  # type: ignore[no-untyped-def]
    """Say loudly, at the very end (after the short summary), which real services were missing
    and how many tests that skipped."""
    yield
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if r.skipped]
    missing = missing_services([_skip_reason(r) for r in skipped])
    if not missing:
        terminalreporter.write_line(
            f"greencpn: no test skipped for a missing real service ({len(skipped)} skip(s) in all)"
        )
        return
    total = sum(n for n, _ in missing.values())
    terminalreporter.section("MISSING REAL SERVICES", sep="!", red=True, bold=True)
    for name, (n, install) in sorted(missing.items()):
        terminalreporter.write_line(
            f"  {name}: {n} test(s) skipped   (install: {install})", red=True, bold=True
        )
    terminalreporter.write_line(
        f"greencpn: {total} test(s) did NOT run because a real service was missing; "
        "CI installs the Debian ones (.ci/apt-packages.txt; ../shared/notes/real-services-in-tests.md)",
        red=True,
        bold=True,
    )
