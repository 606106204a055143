"""[daemon] settings in control.toml, and the slot trigger (APScheduler), without sleeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.job import Job
from apscheduler.schedulers.background import BackgroundScheduler
from fake_controller import FakeController, write_fleet

from greencpn.actuate.safety import ControlSettings
from greencpn.clock import SimClock
from greencpn.daemon.core import Daemon
from greencpn.daemon.schedule import SlotTrigger
from greencpn.daemon.settings import load_settings
from greencpn.errors import ConfigError

T = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def _control(tmp: Path, text: str) -> Path:
    cfg = write_fleet(tmp / "fleet")
    (tmp / "fleet" / "control.toml").write_text(text)
    return cfg


def test_no_control_file_means_shadow_defaults(tmp_path: Path) -> None:
    cfg = write_fleet(tmp_path / "fleet")
    s, allow = load_settings(cfg)
    assert s.mode == "shadow" and not allow
    assert s.offset_s == 30 and s.on_exit == "leave" and s.on_sigterm == "finish"
    assert s.http.host == "127.0.0.1" and s.etcd is None


def test_daemon_table_sits_beside_control_and_apply_still_reads_its_table(tmp_path: Path) -> None:
    cfg = _control(
        tmp_path,
        "[control]\nallow_actuation = true\nmax_power_ops_per_min = 5\n"
        "[daemon]\noffset_s = 60\non_exit = 'restore'\n"
        "[daemon.etcd]\nendpoints = ['127.0.0.1:2379']\nttl_s = 5\n",
    )
    s, allow = load_settings(cfg)
    assert allow and s.mode == "enforce" and s.offset_s == 60 and s.on_exit == "restore"
    assert s.etcd is not None and s.etcd.ttl_s == 5 and s.etcd.key == "/greencpn/leader"
    ctl = ControlSettings.for_config(cfg)  # greencpn apply ignores [daemon]
    assert ctl.allow_actuation and ctl.max_power_ops_per_min == 5


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("[daemon]\nmode = 'yolo'\n", "daemon.mode", "shadow"),
        ("[daemon]\nofset_s = 1\n", "daemon.ofset_s", "spelling"),
        ("[daemon]\noffset_s = '30'\n", "daemon.offset_s", "number"),
        ("[daemon]\nperiod_s = 7\n", "daemon.period_s", "divide a day"),
        ("[daemon.etcd]\nendpoints = ['nohost']\n", "daemon.etcd.endpoints", "host:port"),
        ("[daemon.etcd]\nendpoints = []\n", "daemon.etcd.endpoints", "at least 1"),
        ("[daemon.http]\nhost = 'localhost'\n", "daemon.http.host", "IP address"),
        (
            "[control]\nallow_actuation = false\n[daemon]\nmode = 'enforce'\n",
            "daemon.mode",
            "contradict",
        ),
        ("[daemon]\nmode = \n", None, "TOML"),
    ],
)
def test_bad_settings_name_file_field_and_fix(
    tmp_path: Path, text: str, field: str | None, words: str
) -> None:
    cfg = _control(tmp_path, text)
    with pytest.raises(ConfigError) as ei:
        load_settings(cfg)
    msg = str(ei.value)
    assert "control.toml" in msg and "fix:" in msg
    if field:
        assert f"field '{field}'" in msg
    if words != "contradict":
        assert words in msg
    else:
        assert "allow_actuation = false" in msg


def _daemon(tmp: Path, text: str) -> Daemon:
    cfg = _control(tmp, text)
    return Daemon(
        cfg,
        state_dir=tmp / "state",
        clock=SimClock(T),
        controller_factory=lambda p, **kw: FakeController(p, **kw),
    )


def test_unknown_pool_in_levers_and_long_ttl_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown pool\(s\) \['gpu9'\].*\['p1', 'p2'\]"):
        _daemon(tmp_path, "[daemon.levers.gpu9]\ncaps = false\n")
    with pytest.raises(ConfigError, match="would not fit in one step period"):
        _daemon(
            tmp_path,
            "[daemon]\nperiod_s = 60\n[daemon.etcd]\nendpoints = ['127.0.0.1:1']\nttl_s = 40\n",
        )
    with pytest.raises(ConfigError, match="offset_s = 3600 is not shorter"):
        _daemon(tmp_path, "[daemon]\noffset_s = 3600\n")


def test_trigger_fires_on_boundaries_plus_offset() -> None:
    tr = SlotTrigger(3600, 90)
    assert tr.get_next_fire_time(None, T) == T + timedelta(seconds=90)
    assert tr.get_next_fire_time(None, T + timedelta(seconds=90)) == T + timedelta(seconds=90)
    assert tr.get_next_fire_time(None, T + timedelta(seconds=91)) == T + timedelta(
        hours=1, seconds=90
    )
    prev = T + timedelta(seconds=90)
    assert tr.get_next_fire_time(prev, T) == T + timedelta(hours=1, seconds=90)
    assert tr.slot_start(T + timedelta(minutes=30)) == T
    q = SlotTrigger(900, 0)  # 15-minute slots: aligned to :00 :15 :30 :45
    assert q.get_next_fire_time(None, T + timedelta(minutes=16)) == T + timedelta(minutes=30)


def test_apscheduler_sees_every_missed_fire_of_the_trigger() -> None:
    """APScheduler's own Job logic with our trigger and a 'now' we choose: after five missed
    slots it lists each due fire time (the scheduler then runs only the last, coalesce=True,
    if it is within misfire_grace_time)."""
    sched = BackgroundScheduler(timezone=UTC)
    tr = SlotTrigger(3600, 30)
    job = Job(
        sched,
        id="step",
        func=print,
        args=(),
        kwargs={},
        trigger=tr,
        executor="default",
        misfire_grace_time=300,
        coalesce=True,
        max_instances=1,
        name="step",
        next_run_time=T + timedelta(seconds=30),
    )
    run_times = job._get_run_times(T + timedelta(hours=5, minutes=2))
    assert run_times == [T + timedelta(hours=h, seconds=30) for h in range(6)]
