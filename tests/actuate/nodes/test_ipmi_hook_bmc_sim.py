"""The ipmi hook against REAL BMC simulators (``ipmi_sim`` from Debian's openipmi) on 127.0.0.1.

Each node gets its own ipmi_sim (a LAN channel on a free UDP port, one admin user) whose
chassis_control script keeps the power state in a file and logs every request, so the test
can check which IPMI commands reached the "hardware". A node marked stubborn ignores the soft
(ACPI) power off, like an OS that hangs on shutdown.
"""

from __future__ import annotations

import logging
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from greencpn.actuate.base import NodePower
from greencpn.actuate.hooks import NodeHookPermanentError, NodeHookTemporaryError, make_hook
from greencpn.actuate.hooks import ipmi as ipmi_mod
from greencpn.actuate.hooks.ipmi import IpmiHook
from greencpn.errors import PermanentError

PASSWORD = "s3cret-Pw0rd"
pytestmark = pytest.mark.slow

CHASSIS = """#!/bin/sh
# ipmi_sim chassis_control: "get power" → print power:0|1; "set power 0|1"; "set shutdown 1"
d=$(dirname "$0")
echo "$*" >> "$d/chassis.log"
[ -f "$d/power" ] || echo 1 > "$d/power"
op=$1; shift
while [ $# -gt 0 ]; do
  case "$op:$1" in
    get:power) echo "power:$(cat "$d/power")" ;;
    set:power) echo "$2" > "$d/power"; shift ;;
    set:shutdown) [ -f "$d/stubborn" ] || echo 0 > "$d/power"; shift ;;
    set:reset) shift ;;
  esac
  shift
done
"""


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Bmc:
    node: str
    dir: Path
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def power(self) -> str:
        return (self.dir / "power").read_text().strip()

    def set_power(self, on: bool) -> None:
        (self.dir / "power").write_text("1\n" if on else "0\n")

    def requests(self) -> list[str]:
        log = self.dir / "chassis.log"
        lines = log.read_text().splitlines() if log.exists() else []
        return [ln for ln in lines if not ln.startswith("get")]


def _start_bmc(base: Path, node: str) -> Bmc:
    d = base / node
    (d / "state").mkdir(parents=True)
    (d / "chassis.sh").write_text(CHASSIS)
    (d / "chassis.sh").chmod(0o755)
    port = _free_udp_port()
    (d / "lan.conf").write_text(f"""\
name "{node}-bmc"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 {port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "{d / "chassis.sh"}"
  user 2 true "admin" "{PASSWORD}" admin 10 none md2 md5 straight
""")
    (d / "bmc.emu").write_text(
        "mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02\nmc_enable 0x20\n"
    )
    proc = subprocess.Popen(
        [
            "ipmi_sim",
            "-c",
            str(d / "lan.conf"),
            "-f",
            str(d / "bmc.emu"),
            "-s",
            str(d / "state"),
            "-n",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    return Bmc(node, d, port, proc)


@pytest.fixture
def bmcs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Bmc]]:
    for binary in ("ipmi_sim", "ipmitool"):
        if shutil.which(binary) is None:
            pytest.skip(f"{binary} missing (apt-get install openipmi ipmitool)")
    started: dict[str, Bmc] = {}
    try:
        for node in ("n1", "n2", "n3"):
            started[node] = _start_bmc(tmp_path, node)
        started["n2"].set_power(False)
        monkeypatch.setenv("GREENCPN_TEST_IPMI_PW", PASSWORD)
        # wait until every BMC answers
        deadline = time.monotonic() + 10
        for b in started.values():
            while True:
                r = subprocess.run(
                    [
                        "ipmitool",
                        "-I",
                        "lanplus",
                        "-C",
                        "3",
                        "-H",
                        "127.0.0.1",
                        "-p",
                        str(b.port),
                        "-U",
                        "admin",
                        "-E",
                        "chassis",
                        "power",
                        "status",
                    ],
                    env={"IPMI_PASSWORD": PASSWORD, "PATH": "/usr/bin:/bin"},
                    capture_output=True,
                    text=True,
                    timeout=10,
                )
                if r.returncode == 0:
                    break
                assert time.monotonic() < deadline, f"ipmi_sim for {b.node} did not answer"
                time.sleep(0.05)
        yield started
    finally:
        for b in started.values():
            if b.proc.poll() is None:
                b.proc.send_signal(signal.SIGTERM)
                try:
                    b.proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    b.proc.kill()
                    b.proc.wait(timeout=5)


def _hook(bmcs: dict[str, Bmc], **extra: object) -> IpmiHook:
    cfg: dict[str, object] = {
        "kind": "ipmi",
        "user": "admin",
        "password_env": "GREENCPN_TEST_IPMI_PW",
        "bmcs": {n: f"127.0.0.1:{b.port}" for n, b in bmcs.items()},
        "timeout_s": 10,
        "soft_off_timeout_s": 5,
        "poll_interval_s": 0.1,
    }
    cfg.update(extra)
    hook = make_hook(cfg)
    assert isinstance(hook, IpmiHook)
    return hook


def test_status_and_power_on_reads_first(bmcs: dict[str, Bmc]) -> None:
    hook = _hook(bmcs)
    assert [(s.name, s.power) for s in hook.status(["n1", "n2"])] == [
        ("n1", NodePower.ON),
        ("n2", NodePower.OFF),
    ]
    changes = hook.power_on(["n1", "n2"])
    assert [(c.target, c.before, c.after, c.changed) for c in changes] == [
        ("n1", "on", "on", False),
        ("n2", "off", "on", True),
    ]
    assert bmcs["n1"].requests() == []  # n1 was on: no power command reached its BMC
    assert bmcs["n2"].requests() == ["set power 1"] and bmcs["n2"].power == "1"


def test_power_off_soft_first(bmcs: dict[str, Bmc]) -> None:
    hook = _hook(bmcs)
    changes = hook.power_off(["n1", "n2"])
    assert [(c.target, c.before, c.after, c.changed) for c in changes] == [
        ("n1", "on", "off", True),
        ("n2", "off", "off", False),
    ]
    assert "soft off" in changes[0].message
    assert bmcs["n1"].requests() == ["set shutdown 1"]  # never a hard off


def test_stubborn_node_gets_hard_off_after_timeout(bmcs: dict[str, Bmc]) -> None:
    (bmcs["n3"].dir / "stubborn").touch()
    hook = _hook(bmcs, soft_off_timeout_s=0.5)
    t0 = time.monotonic()
    changes = hook.power_off(["n1", "n3"])
    took = time.monotonic() - t0
    assert {c.target: c.after for c in changes} == {"n1": "off", "n3": "off"}
    n3 = next(c for c in changes if c.target == "n3")
    assert "hard power off" in n3.message
    assert bmcs["n3"].requests() == ["set shutdown 1", "set power 0"]
    assert bmcs["n1"].requests() == ["set shutdown 1"]
    assert 0.5 <= took < 8


def test_hard_off_disabled_reports_temporary_error_with_changes(bmcs: dict[str, Bmc]) -> None:
    (bmcs["n3"].dir / "stubborn").touch()
    hook = _hook(bmcs, soft_off_timeout_s=0.3, hard_off=False)
    with pytest.raises(NodeHookTemporaryError) as info:
        hook.power_off(["n1", "n3"])
    assert [c.target for c in info.value.changes] == ["n1"]  # n1 did go off: recorded
    assert set(info.value.failures) == {"n3"} and "hard_off is false" in str(info.value)
    assert bmcs["n3"].power == "1" and bmcs["n3"].requests() == ["set shutdown 1"]


def test_password_never_on_command_line_or_log(
    bmcs: dict[str, Bmc],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[list[str]] = []
    real = ipmi_mod.run_command

    def spy(argv, **kw):  # type: ignore[no-untyped-def]
        seen.append(list(argv))
        return real(argv, **kw)

    monkeypatch.setattr(ipmi_mod, "run_command", spy)
    caplog.set_level(logging.DEBUG)
    hook = _hook(bmcs)
    hook.power_on(["n2"])
    assert seen and all(PASSWORD not in " ".join(a) and "-P" not in a for a in seen)
    assert all("-E" in a for a in seen)
    # a password file works too (-f)
    pw = tmp_path / "ipmi.pass"
    pw.write_text(PASSWORD + "\n")
    pw.chmod(0o600)
    monkeypatch.delenv("GREENCPN_TEST_IPMI_PW")
    hook = _hook(bmcs, password_file=str(pw))
    assert hook.status(["n1"])[0].power == NodePower.ON
    assert "-f" in seen[-1] and PASSWORD not in " ".join(seen[-1])
    # a wrong password is a permanent error, and it is not shown anywhere
    monkeypatch.setenv("GREENCPN_TEST_IPMI_PW", "wrong-" + PASSWORD)
    hook = _hook(bmcs)
    with pytest.raises(NodeHookPermanentError) as info:
        hook.power_on(["n2"])
    assert "check user, password" in str(info.value)
    assert PASSWORD not in str(info.value) and PASSWORD not in caplog.text
    # no password at all → clear permanent error
    monkeypatch.delenv("GREENCPN_TEST_IPMI_PW")
    with pytest.raises(PermanentError, match="GREENCPN_TEST_IPMI_PW"):
        _hook(bmcs).power_on(["n2"])


def test_unreachable_bmc_is_temporary_and_status_unknown(bmcs: dict[str, Bmc]) -> None:
    dead = _free_udp_port()  # nothing listens there
    hook = _hook({**bmcs, "n9": Bmc("n9", bmcs["n1"].dir, dead, bmcs["n1"].proc)}, timeout_s=1)
    st = hook.status(["n1", "n9"])
    assert st[0].power == NodePower.ON and st[1].power == NodePower.UNKNOWN
    with pytest.raises(NodeHookTemporaryError) as info:
        hook.power_on(["n2", "n9"])
    assert [c.target for c in info.value.changes] == ["n2"] and "n9" in info.value.failures


def test_drain_needs_a_nested_hook(bmcs: dict[str, Bmc], tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="drain_hook"):
        _hook(bmcs).drain(["n1"], "x")
    out = tmp_path / "drained.txt"
    hook = _hook(bmcs, drain_hook={"kind": "command", "drain": ["sh", "-c", f"echo $0 >> {out}"]})
    assert hook.drain(["n1", "n2"], "plan")[0].changed
    assert out.read_text().strip() == "n[1-2]"


def _busy_scenarios():  # type: ignore[no-untyped-def]
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[2] / "actuate" / "apply" / "busy_scenarios.py"
    spec = importlib.util.spec_from_file_location("busy_scenarios", path)
    assert spec and spec.loader
    mod = sys.modules.setdefault("busy_scenarios", importlib.util.module_from_spec(spec))
    spec.loader.exec_module(mod)
    return mod


def test_status_without_a_work_reporting_hook_is_unknown_work(bmcs: dict[str, Bmc]) -> None:
    # issue #9.1: no nested hook, or one whose status prints no jobs=N → work unknown, not 0
    assert [s.running_jobs for s in _hook(bmcs).status(["n1", "n2"])] == [None, None]
    nested = {"kind": "command", "status": ["sh", "-c", "echo n1 on; echo n3 on jobs=0"]}
    st = _hook(bmcs, drain_hook=nested).status(["n1", "n3"])
    assert [(s.name, s.power, s.running_jobs) for s in st] == [
        ("n1", NodePower.ON, None),
        ("n3", NodePower.ON, 0),
    ]


def test_apply_with_ipmi_and_a_nested_command_hook_without_jobs_powers_off_nothing(
    bmcs: dict[str, Bmc], tmp_path: Path
) -> None:
    """Issue #9.1 end to end: real BMCs (ipmi_sim), greencpn apply through the CLI, the nested
    command hook's status prints no jobs=N while both nodes run jobs; the plan wants 0 on."""
    bs = _busy_scenarios()
    o = bs.scenario_ipmi_nesting_a_command_hook(
        tmp_path / "c", {n: bmcs[n] for n in ("n1", "n3")}, "GREENCPN_TEST_IPMI_PW"
    )
    assert o.busy_powered_off == [], o.output
    assert [bmcs[n].power for n in ("n1", "n3")] == ["1", "1"], o.output
    assert bmcs["n1"].requests() == [] and bmcs["n3"].requests() == []
    assert "running work unknown" in o.output and o.exit_code == 1
