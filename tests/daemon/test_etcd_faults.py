"""etcd faults with a REAL etcd of the test's own (killed and restarted mid-test): the leader
stops acting when etcd goes away and says so, acts again once it is back; a follower never
restores on exit."""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import ETCD, EtcdServer, _start_etcd
from fake_controller import FakeController, write_fleet

from greencpn.clock import SystemClock
from greencpn.daemon.core import Daemon


def _daemon(tmp: Path, etcd: EtcdServer, name: str, extra: str = "") -> Daemon:
    cfg = write_fleet(tmp / name / "fleet")
    (tmp / name / "fleet" / "control.toml").write_text(
        "[control]\nallow_actuation = true\n[daemon]\nmode = 'enforce'\n"
        + extra
        + f"[daemon.etcd]\nendpoints = ['{etcd.endpoint}']\nkey = '/faults'\nttl_s = 2\n"
        f"timeout_s = 0.5\nname = '{name}'\n"
    )
    return Daemon(
        cfg,
        state_dir=tmp / name / "state",
        clock=SystemClock(),
        controller_factory=lambda p, **kw: FakeController(p, **kw),
    )


@pytest.fixture
def own_etcd(tmp_path: Path) -> Any:
    if not ETCD:
        pytest.skip("etcd not installed (Debian package 'etcd-server'; .ci/run installs it)")
    box: dict[str, EtcdServer] = {"srv": _start_etcd(tmp_path)}
    yield box
    srv = box["srv"]
    if srv.proc.poll() is None:
        srv.proc.kill()
        srv.proc.wait()
    shutil.rmtree(srv.data_dir, ignore_errors=True)


def test_etcd_down_the_leader_stops_acting_then_resumes(
    tmp_path: Path, own_etcd: Any, caplog: pytest.LogCaptureFixture
) -> None:
    srv: EtcdServer = own_etcd["srv"]
    d = _daemon(tmp_path, srv, "a")
    assert d.elector.campaign_once()
    first = d.run_step()
    epoch = d.elector.fence()
    assert {a["status"] for a in first.actions} == {"done"}
    n = len(d.controller.applied)
    srv.proc.kill()  # etcd dies
    srv.proc.wait()
    with caplog.at_level(logging.WARNING, logger="greencpn"):
        down = d.run_step()
    assert len(d.controller.applied) == n  # nothing applied without etcd
    assert {a["status"] for a in down.actions} == {"skipped"}
    assert "etcd unreachable" in down.errors[0]["message"]
    assert d.elector.campaign_once() is False  # no proof of leadership: nobody acts
    with caplog.at_level(logging.WARNING, logger="greencpn"):
        d.run_step()
    assert "not the leader — etcd unreachable" in caplog.text
    assert d.metrics.leader._value.get() == 0
    # etcd back (same data dir and port): leadership is proven again, actions resume
    log = (tmp_path / "etcd2.log").open("wb")
    srv.proc = subprocess.Popen(srv.proc.args, stdout=log, stderr=subprocess.STDOUT)
    t0 = time.monotonic()
    while not d.elector.campaign_once():
        assert time.monotonic() - t0 < 20, d.elector.state().detail
        time.sleep(0.3)
    assert d.elector.state().detail.startswith("leader (epoch")
    back = d.run_step()
    assert {a["status"] for a in back.actions} == {"done"}
    now_epoch = d.elector.fence()
    assert now_epoch >= epoch and {a["epoch"] for a in back.actions} == {now_epoch}
    d.elector.stop()


def test_only_the_leader_restores_on_exit(tmp_path: Path, own_etcd: Any) -> None:
    srv: EtcdServer = own_etcd["srv"]
    a = _daemon(tmp_path, srv, "a", "on_exit = 'restore'\n")
    b = _daemon(tmp_path, srv, "b", "on_exit = 'restore'\n")
    assert a.elector.campaign_once() and not b.elector.campaign_once()
    assert b.shutdown("SIGTERM") == 0
    assert b.controller.restores == 0 and b.controller.applied == []
    assert a.shutdown("SIGTERM") == 0
    assert a.controller.restores == 1
    assert [r["kind"] for r in a.controller.applied] == ["restore_cap", "restore_cap"]
