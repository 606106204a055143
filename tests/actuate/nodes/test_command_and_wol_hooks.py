"""The command hook (real scripts in a temp dir), Wake-on-LAN (real UDP on 127.0.0.1) and
the Slurm Suspend/Resume entry point run as a real subprocess."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from greencpn.actuate.base import NodePower, NodePowerHook
from greencpn.actuate.hooks import (
    CommandPermanentError,
    CommandTemporaryError,
    NullHook,
    make_hook,
)
from greencpn.actuate.hooks.command import parse_status_lines
from greencpn.actuate.hooks.wol import WolHook, magic_packet, parse_mac
from greencpn.config import CommandHookConfig, NoneHookConfig
from greencpn.errors import ConfigError, PermanentError, TemporaryError

# A tiny "cluster" kept in files: <state>/<node> holds "on"/"off", <state>/<node>.drain the reason.
FAKE_POWER = r"""#!/bin/sh
# usage: fake_power.sh STATE_DIR on|off|drain|resume|status HOSTLIST
dir=$1; op=$2; hl=$3
echo "$op $hl reason=$GREENCPN_REASON" >> "$dir/calls.log"
nodes=$(python3 -c 'import sys; from greencpn.actuate.hostlist import expand; print(" ".join(expand(sys.argv[1])))' "$hl")
for n in $nodes; do
  case $op in
    on) echo on > "$dir/$n" ;;
    off) echo off > "$dir/$n" ;;
    drain) echo "$GREENCPN_REASON" > "$dir/$n.drain" ;;
    resume) rm -f "$dir/$n.drain" ;;
    status)
      s=$(cat "$dir/$n" 2>/dev/null || echo unknown)
      d=""; [ -f "$dir/$n.drain" ] && d=drained
      echo "$n $s $d jobs=0" ;;
  esac
done
"""


def _script(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def fake_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, NodePowerHook]:
    state = tmp_path / "state"
    state.mkdir()
    for n in ("n01", "n02", "n03"):
        (state / n).write_text("on\n")
    (state / "n04").write_text("off\n")
    script = _script(tmp_path, "fake_power.sh", FAKE_POWER)
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[3]))
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    cfg = CommandHookConfig(
        kind="command",
        power_on=[str(script), str(state), "on"],
        power_off=[str(script), str(state), "off"],
        drain=[str(script), str(state), "drain"],
        resume=[str(script), str(state), "resume"],
        status=[str(script), str(state), "status"],
        timeout_s=20,
    )
    return state, make_hook(cfg)


def _calls(state: Path) -> list[str]:
    path = state / "calls.log"
    return (
        [ln for ln in path.read_text().splitlines() if not ln.startswith("status")]
        if path.exists()
        else []
    )


def test_command_hook_power_reads_before_write(fake_cluster: tuple[Path, NodePowerHook]) -> None:
    state, hook = fake_cluster
    assert isinstance(hook, NodePowerHook) and hook.name == "command"
    st = {s.name: s.power for s in hook.status(["n01", "n04", "n09"])}
    assert st == {"n01": NodePower.ON, "n04": NodePower.OFF, "n09": NodePower.UNKNOWN}

    changes = hook.power_off(["n01", "n02", "n04"])
    # n04 was already off: no command for it; n01,n02 passed as ONE hostlist expression
    assert _calls(state) == ["off n[01-02] reason="]
    assert [(c.target, c.changed, c.before, c.after) for c in changes] == [
        ("n01", True, "on", "shutting_down"),
        ("n02", True, "on", "shutting_down"),
        ("n04", False, "off", "off"),
    ]  # in the order asked
    assert (state / "n01").read_text().strip() == "off"

    # re-applying changes nothing and runs nothing
    again = hook.power_off(["n01", "n02", "n04"])
    assert not any(c.changed for c in again)
    assert _calls(state) == ["off n[01-02] reason="]

    on = hook.power_on(["n01", "n03"])
    assert [(c.target, c.changed) for c in on] == [("n01", True), ("n03", False)]
    assert _calls(state)[-1] == "on n01 reason="


def test_command_hook_drain_and_resume(fake_cluster: tuple[Path, NodePowerHook]) -> None:
    state, hook = fake_cluster
    changes = hook.drain(["n02", "n03"], "greencpn: low-carbon plan")
    assert all(c.changed and c.what == "drained" for c in changes)
    assert (state / "n02.drain").read_text().strip() == "greencpn: low-carbon plan"
    assert [s.drained for s in hook.status(["n01", "n02", "n03"])] == [False, True, True]
    assert not any(c.changed for c in hook.drain(["n02"], "again"))
    resumed = hook.resume(["n01", "n02", "n03"])
    assert [(c.target, c.changed) for c in resumed] == [
        ("n01", False),
        ("n02", True),
        ("n03", True),
    ]
    assert _calls(state)[-1] == "resume n[02-03] reason="


def test_command_hook_timeout_kills_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    # the script starts a grandchild that would outlive a plain kill of the script
    script = _script(tmp_path, "hang.sh", f"#!/bin/sh\nsleep 60 &\necho $! > {pidfile}\nwait\n")
    hook = make_hook({"kind": "command", "power_on": str(script), "timeout_s": 0.5})
    t0 = time.monotonic()
    with pytest.raises(CommandTemporaryError, match="timed out after 0.5 s"):
        hook.power_on(["n1"])
    assert time.monotonic() - t0 < 5
    child = int(pidfile.read_text())
    time.sleep(0.2)
    # the grandchild is gone too (or a zombie waiting for a reaper that is not us)
    status = Path(f"/proc/{child}/status")
    if status.exists():
        assert "State:\tZ" in status.read_text()


def test_command_hook_exit_codes_are_typed(tmp_path: Path) -> None:
    fail = _script(
        tmp_path,
        "fail.sh",
        "#!/bin/sh\necho 'first line' >&2\necho 'BMC unreachable' >&2\nexit 3\n",
    )
    hook = make_hook({"kind": "command", "power_on": str(fail)})
    with pytest.raises(CommandTemporaryError) as info:
        hook.power_on(["n1"])
    assert info.value.returncode == 3 and "BMC unreachable" in info.value.stderr_tail
    assert isinstance(info.value, TemporaryError)

    hook = make_hook({"kind": "command", "power_on": str(fail), "permanent_exit_codes": [3]})
    with pytest.raises(CommandPermanentError):
        hook.power_on(["n1"])
    hook = make_hook({"kind": "command", "power_on": str(tmp_path / "missing.sh")})
    with pytest.raises(PermanentError, match="command not found"):
        hook.power_on(["n1"])
    # no drain command configured
    with pytest.raises(PermanentError, match="no 'drain' command"):
        hook.drain(["n1"], "x")


def test_command_hook_placeholders(tmp_path: Path) -> None:
    out = tmp_path / "out.txt"
    script = _script(tmp_path, "echo.sh", f'#!/bin/sh\necho "$@" >> {out}\n')
    hook = make_hook(
        {"kind": "command", "drain": [str(script), "--nodes={hostlist}", "--why", "{reason}"]}
    )
    hook.drain(["b2", "b1", "b3"], "maintenance")
    assert out.read_text().strip() == "--nodes=b[1-3] --why maintenance"


def test_status_line_parsing() -> None:
    st = parse_status_lines(
        "# header\nn1 on jobs=2 gpu=ok\nn2 down drained\n\n", ["n1", "n2", "n3"]
    )
    assert [(s.name, s.power, s.drained, s.running_jobs) for s in st] == [
        ("n1", NodePower.ON, False, 2),
        ("n2", NodePower.OFF, True, None),  # no jobs=N: work unknown (issue #9.1)
        ("n3", NodePower.UNKNOWN, False, None),
    ]
    assert st[0].extra == {"gpu": "ok"}
    with pytest.raises(TemporaryError, match="line 1"):
        parse_status_lines("n1 sleepy\n", ["n1"])


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        make_hook({"kind": "command", "power_on": "x", "timout_s": 5})
    assert info.value.field == "hook.timout_s" and "unknown key" in str(info.value)
    with pytest.raises(ConfigError, match="hook.timeout_s"):
        make_hook({"kind": "command", "timeout_s": -1})
    with pytest.raises(ConfigError, match="hook.kind"):
        make_hook({"kind": "teleport"})
    with pytest.raises(ConfigError, match="hook.macs.n1"):
        make_hook({"kind": "wol", "macs": {"n1": "zz:00"}, "address": "127.0.0.1"})
    assert isinstance(make_hook(NoneHookConfig()), NullHook)
    with pytest.raises(PermanentError):
        make_hook(NoneHookConfig()).power_off(["n1"])


# ------------------------------------------------------------------------------------------
# Wake-on-LAN
# ------------------------------------------------------------------------------------------


def test_magic_packet_bytes() -> None:
    pkt = magic_packet("00:1A:2b:3c:4D:5e")
    assert len(pkt) == 102
    assert pkt[:6] == b"\xff" * 6
    assert pkt[6:12] == bytes([0x00, 0x1A, 0x2B, 0x3C, 0x4D, 0x5E])
    assert pkt[6:] == bytes.fromhex("001a2b3c4d5e") * 16
    assert parse_mac("00-1a-2b-3c-4d-5e") == parse_mac("001a2b3c4d5e")
    for bad in ("00:1a:2b:3c:4d", "00:1a-2b:3c:4d:5e", "gg:1a:2b:3c:4d:5e"):
        with pytest.raises(ValueError):
            parse_mac(bad)


def test_wol_sends_to_a_loopback_listener() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.settimeout(5)
        port = listener.getsockname()[1]
        hook = make_hook(
            {
                "kind": "wol",
                "address": "127.0.0.1",
                "port": port,
                "repeat": 2,
                "macs": {"n1": "aa:bb:cc:dd:ee:01", "n2": "aa:bb:cc:dd:ee:02"},
            }
        )
        changes = hook.power_on(["n2", "n1"])
        got = [listener.recvfrom(1024)[0] for _ in range(4)]
    assert got == [magic_packet("aa:bb:cc:dd:ee:02")] * 2 + [magic_packet("aa:bb:cc:dd:ee:01")] * 2
    assert [(c.target, c.before, c.after, c.changed) for c in changes] == [
        ("n2", "unknown", "booting", True),
        ("n1", "unknown", "booting", True),
    ]
    with pytest.raises(PermanentError, match="only wakes"):
        hook.power_off(["n1"])
    with pytest.raises(ConfigError, match="no MAC address for node 'n3'"):
        hook.power_on(["n3"])


def test_wol_refuses_non_loopback_in_tests() -> None:
    with pytest.raises(PermanentError, match="only loopback"):
        WolHook({"n1": "aa:bb:cc:dd:ee:01"})  # default 255.255.255.255
    with pytest.raises(PermanentError, match="only loopback"):
        WolHook({"n1": "aa:bb:cc:dd:ee:01"}, address="10.0.0.255")


def test_wol_with_nested_status_skips_awake_nodes(fake_cluster: tuple[Path, NodePowerHook]) -> None:
    state, _ = fake_cluster
    script = state.parent / "fake_power.sh"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.settimeout(0.3)
        port = listener.getsockname()[1]
        hook = make_hook(
            {
                "kind": "wol",
                "address": "127.0.0.1",
                "port": port,
                "repeat": 1,
                "macs": {"n01": "aa:bb:cc:dd:ee:01", "n04": "aa:bb:cc:dd:ee:04"},
                "off": {
                    "kind": "command",
                    "status": [str(script), str(state), "status"],
                    "power_off": [str(script), str(state), "off"],
                },
            }
        )
        changes = hook.power_on(["n01", "n04"])  # n01 is on already
        assert listener.recvfrom(1024)[0] == magic_packet("aa:bb:cc:dd:ee:04")
        with pytest.raises(socket.timeout):
            listener.recvfrom(1024)
    assert [(c.target, c.changed) for c in changes] == [("n01", False), ("n04", True)]
    assert hook.power_off(["n01"])[0].changed


# ------------------------------------------------------------------------------------------
# Slurm Suspend/ResumeProgram entry point, run as Slurm runs it (a subprocess)
# ------------------------------------------------------------------------------------------


def test_suspend_resume_entry_point(
    fake_cluster: tuple[Path, NodePowerHook], tmp_path: Path
) -> None:
    state, _ = fake_cluster
    script = state.parent / "fake_power.sh"
    hook_toml = tmp_path / "hook.toml"
    hook_toml.write_text(
        'kind = "command"\n'
        f'power_on = ["{script}", "{state}", "on"]\n'
        f'power_off = ["{script}", "{state}", "off"]\n'
        f'status = ["{script}", "{state}", "status"]\n'
    )
    record = tmp_path / "power.jsonl"
    env = dict(os.environ, GREENCPN_POWER_HOOK_CONFIG=str(hook_toml))
    base = [sys.executable, "-m", "greencpn.actuate.suspend_resume", "--record", str(record)]
    r = subprocess.run(
        [*base, "suspend", "n[01-02]"], env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert (state / "n01").read_text().strip() == "off"
    r = subprocess.run(
        [*base, "resume", "n[01,04]"], env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert (state / "n04").read_text().strip() == "on"
    r = subprocess.run([*base, "fail", "n03"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    lines = [json.loads(x) for x in record.read_text().splitlines()]
    assert [(e["action"], e["nodes"]) for e in lines] == [
        ("suspend", ["n01", "n02"]),
        ("resume", ["n01", "n04"]),
        ("fail", ["n03"]),
    ]
    assert [c["changed"] for c in lines[0]["changes"]] == [True, True]
    # bad hostlist → exit 2 and a recorded error; a slurm hook is refused
    r = subprocess.run(
        [*base, "resume", "n[1-"], env=env, capture_output=True, text=True, timeout=60
    )
    assert (
        r.returncode == 2 and "hostlist" in json.loads(record.read_text().splitlines()[-1])["error"]
    )
    hook_toml.write_text('kind = "slurm"\n')
    r = subprocess.run([*base, "resume", "n1"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "cannot be Slurm's own" in r.stderr


def test_suspend_resume_validates_the_hook_like_the_fleet_config(tmp_path: Path) -> None:
    """The hook TOML of Slurm's Suspend/ResumeProgram goes through the same hook models as a
    pool's ``[pools.hook]`` (issue 13): a value the builder alone let through (an infinite
    command timeout) is refused with the file, the field and the fix, and nothing is run."""
    from greencpn.actuate.suspend_resume import run

    ran = tmp_path / "ran"
    hook_toml = tmp_path / "hook.toml"
    hook_toml.write_text(
        # sh -c: the hostlist the hook appends is $0, so nothing is created in the cwd
        f'kind = "command"\npower_on = ["sh", "-c", "touch {ran}"]\npower_off = "true"\n'
        "timeout_s = inf\n"
    )
    record = tmp_path / "power.jsonl"
    now = datetime(2026, 1, 5, tzinfo=UTC)
    rc = run("resume", "n1", hook_config=hook_toml, record=record, now=now)
    err = json.loads(record.read_text().splitlines()[-1]).get("error", "")
    assert rc == 2, err
    assert not ran.exists()
    assert str(hook_toml) in err and "hook.timeout_s" in err and "write timeout_s = 120.0" in err
    # an unknown key is named as the fleet config names it, before any credential is looked at
    hook_toml.write_text(
        'kind = "ipmi"\nuser = "admin"\nusr = "x"\npassword_file = "/nonexistent"\n'
        'bmcs = { n1 = "127.0.0.1" }\n'
    )
    rc = run("resume", "n1", hook_config=hook_toml, record=record, now=now)
    err = json.loads(record.read_text().splitlines()[-1])["error"]
    assert rc == 2 and "hook.usr" in err and "unknown key 'usr' for hook kind 'ipmi'" in err
