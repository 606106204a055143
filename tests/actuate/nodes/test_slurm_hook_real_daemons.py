"""The slurm hook against a REAL slurmctld + slurmd (Debian's Slurm 22.05 with munge).

The ``slurm`` fixture (tests/conftest.py, shared with tests/actuate/jobs) starts munged,
slurmctld and one slurmd (``slurmd -N node1``) on 127.0.0.1 with all state in a temp dir
(``SLURM_CONF``). Cloud nodes ``fake[1-4]`` start powered down. greencpn's own
``python -m greencpn.actuate.suspend_resume`` is Slurm's SuspendProgram / ResumeProgram /
ResumeFailProgram; it records each call (JSON lines) and runs a ``command`` hook that plays
the hardware (appends to hw.log).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pytest

from greencpn.actuate.base import NodePower
from greencpn.actuate.hooks import NodeHookPermanentError, make_hook
from greencpn.actuate.hooks.slurm import SlurmHook
from greencpn.config import SlurmHookConfig
from greencpn.errors import PermanentError, TemporaryError
from tests.slurm_cluster import free_port as _free_port
from tests.slurm_cluster import wait_for as _wait

if TYPE_CHECKING:
    from slurm_cluster import SlurmCluster  # the shared `slurm` fixture (tests/conftest.py)

pytestmark = pytest.mark.slow


def _hook(cluster: SlurmCluster, **extra: object) -> SlurmHook:
    hook = make_hook(SlurmHookConfig(slurm_conf=cluster.env["SLURM_CONF"], timeout_s=20, **extra))
    assert isinstance(hook, SlurmHook)
    return hook


def _power(hook: SlurmHook, *nodes: str) -> dict[str, NodePower]:
    return {s.name: s.power for s in hook.status(nodes)}


def test_status_reads_powered_down_cloud_nodes(slurm: SlurmCluster) -> None:
    hook = _hook(slurm)
    st = hook.status(["node1", "fake1", "fake4", "nosuch"])
    assert [(s.name, s.power, s.drained, s.running_jobs) for s in st] == [
        ("node1", NodePower.ON, False, 0),
        ("fake1", NodePower.OFF, False, 0),
        ("fake4", NodePower.OFF, False, 0),
        ("nosuch", NodePower.UNKNOWN, False, 0),
    ]
    assert "POWERED_DOWN" in st[1].detail
    # the text parser (sinfo -N -o) agrees with the JSON one
    text = _hook(slurm, status_format="text").status(["node1", "fake1", "fake4"])
    assert [(s.power, s.drained) for s in text] == [(s.power, s.drained) for s in st[:3]]


def test_power_up_makes_slurm_call_resume_program(slurm: SlurmCluster) -> None:
    hook = _hook(slurm)
    t0 = time.monotonic()
    changes = hook.power_on(["fake2", "fake1"])
    assert [(c.target, c.before, c.after, c.changed) for c in changes] == [
        ("fake2", "off", "booting", True),
        ("fake1", "off", "booting", True),
    ]
    calls = _wait(
        "ResumeProgram call", lambda: [c for c in slurm.calls() if c["action"] == "resume"], 15
    )
    assert isinstance(calls, list)
    # Slurm passed ONE hostlist expression; greencpn expanded it and ran the hardware hook
    assert calls[0]["hostlist"] == "fake[1-2]" and calls[0]["nodes"] == ["fake1", "fake2"]
    assert _wait(
        "hw power-on",
        lambda: slurm.hw_log.exists() and "on fake[1-2]" in slurm.hw_log.read_text(),
        10,
    )
    print(f"power_up → ResumeProgram ran after {time.monotonic() - t0:.2f} s")
    assert _power(hook, "fake1", "fake2") == {
        "fake1": NodePower.BOOTING,
        "fake2": NodePower.BOOTING,
    }
    # powering on a booting node is a no-op: no second scontrol call, no second resume
    again = hook.power_on(["fake1"])
    assert not again[0].changed and again[0].message == "already booting"
    time.sleep(1.5)
    assert len([c for c in slurm.calls() if c["action"] == "resume"]) == 1


def test_drain_sets_reason_and_resume_clears_it(slurm: SlurmCluster) -> None:
    hook = _hook(slurm)
    changes = hook.drain(["node1", "fake3"], "greencpn plan 2026-11-25T22:00Z: low carbon")
    assert [(c.target, c.what, c.before, c.after, c.changed) for c in changes] == [
        ("node1", "drained", False, True, True),
        ("fake3", "drained", False, True, True),
    ]
    out = slurm.run("scontrol", "show", "node", "node1")
    assert "DRAIN" in out and "Reason=greencpn plan 2026-11-25T22:00Z: low carbon" in out
    st = {s.name: s for s in hook.status(["node1", "fake3"])}
    assert st["node1"].drained and st["node1"].power == NodePower.ON
    assert st["fake3"].drained and st["fake3"].power == NodePower.OFF
    assert st["node1"].extra["reason"] == "greencpn plan 2026-11-25T22:00Z: low carbon"
    assert not any(c.changed for c in hook.drain(["node1"], "again"))
    resumed = hook.resume(["node1", "fake3", "fake4"])
    assert [(c.target, c.changed) for c in resumed] == [
        ("node1", True),
        ("fake3", True),
        ("fake4", False),
    ]
    assert not any(s.drained for s in hook.status(["node1", "fake3"]))


def test_running_jobs_counted_from_squeue(slurm: SlurmCluster) -> None:
    hook = _hook(slurm)
    job_id = slurm.run(
        "sbatch",
        "--parsable",
        "-p",
        "main",
        "-w",
        "node1",
        "-D",
        str(slurm.dir / "jobs"),
        "-o",
        "/dev/null",
        "--wrap",
        "sleep 120",
    ).strip()
    try:
        st = _wait(
            "job running on node1",
            lambda: [s for s in hook.status(["node1"]) if s.running_jobs == 1],
            20,
        )
        assert isinstance(st, list) and st[0].power == NodePower.ON
    finally:
        slurm.run("scancel", job_id)
    _wait("job gone", lambda: hook.status(["node1"])[0].running_jobs == 0, 20)


def test_power_down_makes_slurm_call_suspend_program(slurm: SlurmCluster) -> None:
    hook = _hook(slurm)
    changes = hook.power_off(["node1", "fake4"])  # fake4 is powered down already
    assert [(c.target, c.before, c.changed) for c in changes] == [
        ("node1", "on", True),
        ("fake4", "off", False),
    ]
    assert changes[0].after in ("shutting_down", "off")
    calls = _wait(
        "SuspendProgram call", lambda: [c for c in slurm.calls() if c["action"] == "suspend"], 15
    )
    assert isinstance(calls, list) and calls[0]["hostlist"] == "node1"
    assert _wait("hw power-off", lambda: "off node1" in slurm.hw_log.read_text(), 10)
    # after SuspendTimeout (2 s) Slurm shows it powered down
    _wait("node1 powered down", lambda: _power(hook, "node1")["node1"] == NodePower.OFF, 15)
    assert not hook.power_off(["node1"])[0].changed


def test_slurm_errors_are_typed(slurm: SlurmCluster) -> None:
    hook = _hook(slurm)
    with pytest.raises(PermanentError, match="Invalid node name"):
        hook._update(["nosuch9"], "state=drain", "reason=x")
    # a node Slurm does not know fails alone; the others are still acted on and reported
    with pytest.raises(NodeHookPermanentError) as info:
        hook.drain(["fake4", "nosuch9"], "typed errors")
    assert set(info.value.failures) == {"nosuch9"}
    assert [(c.target, c.changed) for c in info.value.changes] == [("fake4", True)]
    assert hook.status(["fake4"])[0].drained
    hook.resume(["fake4"])
    # slurmctld unreachable → temporary error (a config pointing at a port nobody serves)
    conf = slurm.dir / "dead.conf"
    text = (slurm.dir / "slurm.conf").read_text()
    port_line = next(ln for ln in text.splitlines() if ln.startswith("SlurmctldPort="))
    conf.write_text(text.replace(port_line, f"SlurmctldPort={_free_port()}"))
    dead = make_hook(
        {"kind": "slurm", "slurm_conf": str(conf), "timeout_s": 2, "status_format": "text"}
    )
    t0 = time.monotonic()
    with pytest.raises(TemporaryError, match="timed out after 2 s"):
        dead.status(["fake1"])
    assert time.monotonic() - t0 < 10


def test_boot_timeout_marks_node_failed(slurm: SlurmCluster) -> None:
    """fake[1-2] were powered up above and never register: after ResumeTimeout (8 s) Slurm
    runs ResumeFailProgram and the hook reports them failed; an operator's resume clears it."""
    hook = _hook(slurm)
    if _power(hook, "fake1")["fake1"] == NodePower.OFF:  # run on its own (-k): power up first
        hook.power_on(["fake1", "fake2"])
    _wait(
        "fake1/fake2 failed",
        lambda: set(_power(hook, "fake1", "fake2").values()) == {NodePower.FAILED},
        30,
    )
    st = hook.status(["fake1"])[0]
    assert "ResumeTimeout reached" in st.detail
    fails = _wait(
        "ResumeFailProgram call", lambda: [c for c in slurm.calls() if c["action"] == "fail"], 15
    )
    assert isinstance(fails, list) and fails[0]["hostlist"] == "fake[1-2]"
    # failed but powered down: powering off again is a no-op (no repeated SuspendProgram)
    off = hook.power_off(["fake1"])
    assert not off[0].changed and off[0].before == "failed"
    slurm.run("scontrol", "update", "nodename=fake[1-2]", "state=resume")
    _wait(
        "fake1/fake2 back to powered down",
        lambda: set(_power(hook, "fake1", "fake2").values()) == {NodePower.OFF},
        15,
    )
