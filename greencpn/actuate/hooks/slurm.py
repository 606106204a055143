"""``slurm`` hook: drain, resume and power nodes through ``scontrol``; status from ``sinfo``.

Actions (each one ``scontrol`` call with a hostlist expression of the nodes that need it)::

    scontrol update nodename=<hostlist> state=drain reason="<reason>"
    scontrol update nodename=<hostlist> state=resume
    scontrol update nodename=<hostlist> state=power_down     # or power_down_asap / _force
    scontrol update nodename=<hostlist> state=power_up

Slurm then runs its own SuspendProgram / ResumeProgram (which can be greencpn's
``python -m greencpn.actuate.suspend_resume``, see that module) to move the hardware.

Status comes from ``sinfo --json`` (state + state flags), or from
``sinfo -N -h -o '%N|%T|%E'`` when JSON output is unavailable, plus running jobs per node from
``squeue -h -t running,completing,configuring,suspended -o '%i|%N'``. Mapping:

=====================================  ==========================================
Slurm                                   greencpn
=====================================  ==========================================
``POWERED_DOWN`` (``idle~``)            ``off``
``POWER_UP``, ``POWERING_UP`` (``#``)   ``booting``
``POWERING_DOWN`` / ``POWER_DOWN``      ``shutting_down`` (``%`` and ``!`` suffixes)
``DOWN`` (e.g. ``down~`` after          ``failed`` (unless powering up/down:
ResumeTimeout), ``NOT_RESPONDING``       the transition wins)
other states (idle, mixed, allocated)   ``on``
``DRAIN`` flag (drained/draining)       ``drained=True``
=====================================  ==========================================

Config keys (``kind = "slurm"``):

* ``scontrol``, ``sinfo``, ``squeue`` — the commands (default: found on ``PATH``).
* ``slurm_conf`` — path passed as ``SLURM_CONF`` (default: Slurm's own default).
* ``timeout_s`` (default 30) — per Slurm command.
* ``power_down_mode`` (default ``"power_down"``) — ``"power_down_asap"`` (drain, then power
  down when idle) or ``"power_down_force"`` (cancel jobs and power down at once: only set this
  if you mean it).
* ``status_format`` (default ``"auto"``) — ``"json"``, ``"text"`` or ``"auto"`` (JSON, falling
  back to text).
* ``verify`` (default true) — read the state back after each action and report it as ``after``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from greencpn.actuate.base import Change, NodePower, NodeStatus
from greencpn.actuate.hooks._common import (
    POWER_OFF_LIKE,
    POWER_ON_LIKE,
    CommandPermanentError,
    CommandTemporaryError,
    HookSettings,
    log,
    noop,
    raise_if_failed,
    run_command,
)
from greencpn.actuate.hostlist import compress, expand
from greencpn.errors import PermanentError, TemporaryError

POWER_DOWN_MODES = ("power_down", "power_down_asap", "power_down_force")
_BUSY_JOB_STATES = "running,completing,configuring,suspended"
# scontrol/sinfo messages that retrying will not fix
_PERMANENT_MARKERS = (
    "invalid node name",
    "invalid node state",
    "invalid user",
    "access denied",
    "permission denied",
    "not permitted",
    "invalid argument",
)


def _power_from_flags(state: str, flags: set[str]) -> tuple[NodePower, bool]:
    """(power, drained) from a base state (``idle``) and flags (``{"POWERED_DOWN", ...}``)."""
    state = state.upper()
    drained = "DRAIN" in flags or state in ("DRAINED", "DRAINING")
    # A power transition in progress wins, even on a DOWN node (Slurm retrying a failed boot):
    # reporting it as failed would make the caller ask again and again.
    if "POWERING_UP" in flags or "POWER_UP" in flags:  # POWER_UP: requested, not yet run
        return NodePower.BOOTING, drained
    if "POWERING_DOWN" in flags or "POWER_DOWN" in flags:
        return NodePower.SHUTTING_DOWN, drained
    if state == "DOWN" or "FAIL" in flags:  # e.g. down~ after ResumeTimeout: boot failed
        return NodePower.FAILED, drained
    if "POWERED_DOWN" in flags:
        return NodePower.OFF, drained
    if "NOT_RESPONDING" in flags:
        return NodePower.FAILED, drained
    if state in ("FUTURE", "UNKNOWN", "INVALID"):
        return NodePower.UNKNOWN, drained
    return NodePower.ON, drained


_SUFFIX_FLAGS = {
    "~": "POWERED_DOWN",
    "#": "POWERING_UP",
    "%": "POWERING_DOWN",
    "!": "POWER_DOWN",
    "*": "NOT_RESPONDING",
    "$": "MAINTENANCE",
    "@": "REBOOT_REQUESTED",
    "^": "REBOOT_ISSUED",
    "-": "PLANNED",
}


def parse_sinfo_text(text: str) -> dict[str, tuple[NodePower, bool, str, str, frozenset[str]]]:
    """Parse ``sinfo -N -h -o '%N|%T|%E'`` → node → (power, drained, long state, reason)."""
    out: dict[str, tuple[NodePower, bool, str, str, frozenset[str]]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("|", 2)
        if len(parts) < 2:
            raise TemporaryError(f"sinfo: cannot parse line {line!r}")
        name, long_state = parts[0].strip(), parts[1].strip()
        reason = parts[2].strip() if len(parts) > 2 else ""
        base = long_state.rstrip("".join(_SUFFIX_FLAGS))
        flags = {_SUFFIX_FLAGS[c] for c in long_state[len(base) :]}
        if base.lower() in ("drained", "draining", "drain"):
            flags.add("DRAIN")
            base = "idle" if base.lower() != "draining" else "allocated"
        power, drained = _power_from_flags(base, flags)
        out[name] = (
            power,
            drained,
            long_state,
            "" if reason == "none" else reason,
            frozenset(flags),
        )
    return out


def parse_sinfo_json(text: str) -> dict[str, tuple[NodePower, bool, str, str, frozenset[str]]]:
    """Parse ``sinfo --json`` (Slurm 22.05+: ``nodes[].state`` + ``state_flags``)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TemporaryError(f"sinfo --json gave invalid JSON: {exc}") from exc
    out: dict[str, tuple[NodePower, bool, str, str, frozenset[str]]] = {}
    for node in data.get("nodes", []):
        state = node.get("state", "unknown")
        if isinstance(state, list):  # Slurm >= 23.02: state is a list of words
            words = [str(s).upper() for s in state]
            base = words[0] if words else "UNKNOWN"
            flags = set(words[1:]) | {str(f).upper() for f in node.get("state_flags", [])}
        else:
            base = str(state)
            flags = {str(f).upper() for f in node.get("state_flags", [])}
        power, drained = _power_from_flags(base, flags)
        long_state = "+".join([base.upper(), *sorted(flags)])
        out[str(node.get("name"))] = (
            power,
            drained,
            long_state,
            str(node.get("reason") or ""),
            frozenset(flags),
        )
    return out


def parse_squeue(text: str) -> dict[str, int]:
    """``squeue -h -o '%i|%N'`` → running jobs per node."""
    counts: dict[str, int] = {}
    for line in text.splitlines():
        if "|" not in line:
            continue
        _, nodelist = line.split("|", 1)
        nodelist = nodelist.strip()
        if not nodelist or nodelist == "(null)":
            continue
        for n in expand(nodelist):
            counts[n] = counts.get(n, 0) + 1
    return counts


class SlurmHook:
    """Talks to slurmctld through the Slurm client commands (see the module docstring)."""

    name = "slurm"

    def __init__(
        self,
        *,
        scontrol: str = "scontrol",
        sinfo: str = "sinfo",
        squeue: str = "squeue",
        slurm_conf: str | None = None,
        timeout_s: float = 30.0,
        power_down_mode: str = "power_down",
        status_format: str = "auto",
        verify: bool = True,
    ) -> None:
        if power_down_mode not in POWER_DOWN_MODES:
            raise PermanentError(f"power_down_mode must be one of {POWER_DOWN_MODES}")
        self.scontrol, self.sinfo, self.squeue = scontrol, sinfo, squeue
        self.env = {"SLURM_CONF": slurm_conf} if slurm_conf else {}
        self.timeout_s = timeout_s
        self.power_down_mode = power_down_mode
        self.status_format = status_format
        self.verify = verify

    @classmethod
    def from_settings(cls, s: HookSettings) -> SlurmHook:
        mode = s.str_("power_down_mode", "power_down") or "power_down"
        if mode not in POWER_DOWN_MODES:
            raise s.error(
                "power_down_mode",
                f"must be one of {POWER_DOWN_MODES}, got {mode!r}",
                'write power_down_mode = "power_down"',
            )
        fmt = s.str_("status_format", "auto") or "auto"
        if fmt not in ("auto", "json", "text"):
            raise s.error(
                "status_format",
                f"must be auto, json or text, got {fmt!r}",
                'write status_format = "auto"',
            )
        hook = cls(
            scontrol=s.str_("scontrol", "scontrol") or "scontrol",
            sinfo=s.str_("sinfo", "sinfo") or "sinfo",
            squeue=s.str_("squeue", "squeue") or "squeue",
            slurm_conf=s.str_("slurm_conf"),
            timeout_s=s.float_("timeout_s", 30.0, minimum=0.001),
            power_down_mode=mode,
            status_format=fmt,
            verify=s.bool_("verify", True),
        )
        s.check_unknown()
        return hook

    # ----------------------------------------------------------------------------------------

    def _run(self, argv: list[str]) -> str:
        try:
            return run_command(argv, timeout_s=self.timeout_s, env=self.env).stdout
        except CommandTemporaryError as exc:
            text = exc.stderr_tail.lower()
            if any(m in text for m in _PERMANENT_MARKERS):
                raise CommandPermanentError(
                    str(exc), argv=exc.argv, returncode=exc.returncode, stderr_tail=exc.stderr_tail
                ) from None
            raise

    def _update(self, nodes: Sequence[str], *args: str) -> None:
        argv = [self.scontrol, "update", f"nodename={compress(nodes)}", *args]
        log.info("slurm: %s", " ".join(argv[1:]))
        self._run(argv)

    def _states(self) -> dict[str, tuple[NodePower, bool, str, str, frozenset[str]]]:
        if self.status_format in ("auto", "json"):
            try:
                return parse_sinfo_json(self._run([self.sinfo, "--json"]))
            except (TemporaryError, PermanentError):
                if self.status_format == "json":
                    raise
                log.debug("slurm: sinfo --json failed, falling back to text output")
        return parse_sinfo_text(self._run([self.sinfo, "-N", "-h", "-o", "%N|%T|%E"]))

    def status(self, nodes: Sequence[str]) -> list[NodeStatus]:
        nodes = list(nodes)
        if not nodes:
            return []
        states = self._states()
        jobs = parse_squeue(self._run([self.squeue, "-h", "-t", _BUSY_JOB_STATES, "-o", "%i|%N"]))
        out = []
        for n in nodes:
            if n not in states:
                # squeue is the authority on work: it lists no job on a node Slurm does not know
                out.append(
                    NodeStatus(n, NodePower.UNKNOWN, running_jobs=jobs.get(n, 0),
                               detail="not known to Slurm")
                )  # fmt: skip
                continue
            power, drained, long_state, reason, flags = states[n]
            out.append(
                NodeStatus(
                    n,
                    power,
                    drained,
                    jobs.get(n, 0),
                    detail=long_state + (f" ({reason})" if reason else ""),
                    extra={"slurm_state": long_state, "reason": reason, "flags": sorted(flags)},
                )
            )
        return out

    def _after(self, nodes: Sequence[str], expected: NodePower) -> dict[str, NodeStatus]:
        if not self.verify:
            return {n: NodeStatus(n, expected) for n in nodes}
        return {s.name: s for s in self.status(nodes)}

    def _known(
        self, op: str, nodes: Sequence[str]
    ) -> tuple[dict[str, NodeStatus], dict[str, Exception]]:
        """Status of ``nodes``; nodes Slurm does not know become per-node failures."""
        before = {s.name: s for s in self.status(nodes)}
        unknown: dict[str, Exception] = {
            n: PermanentError(
                f"slurm {op}: node {n!r} is not known to Slurm — check the pool's "
                "hostlist against `sinfo -N`"
            )
            for n, st in before.items()
            if st.detail == "not known to Slurm"
        }
        return before, unknown

    def _power(
        self, nodes: Sequence[str], state: str, already: tuple[NodePower, ...], expected: NodePower
    ) -> list[Change]:
        before, failures = self._known(state, nodes)

        def done(st: NodeStatus) -> bool:
            if st.power in already:
                return True
            # a failed boot leaves the node DOWN but powered down: powering it off again would
            # only make Slurm repeat its SuspendProgram
            flags = set(st.extra.get("flags", ()))  # type: ignore[call-overload]
            return expected == NodePower.SHUTTING_DOWN and "POWERED_DOWN" in flags

        todo = [n for n in nodes if not done(before[n]) and n not in failures]
        changes = [
            noop(n, "power", before[n].power.value, f"already {before[n].power.value}")
            for n in nodes
            if n not in todo and n not in failures
        ]
        if todo:
            self._update(todo, f"state={state}")
            after = self._after(todo, expected)
            changes += [
                Change(
                    n,
                    "power",
                    before[n].power.value,
                    after[n].power.value,
                    True,
                    f"scontrol update state={state}; Slurm now shows {after[n].detail}",
                )
                for n in todo
            ]
        return raise_if_failed(f"slurm {state}", changes, failures, nodes)

    def power_on(self, nodes: Sequence[str]) -> list[Change]:
        return self._power(nodes, "power_up", POWER_ON_LIKE, NodePower.BOOTING)

    def power_off(self, nodes: Sequence[str]) -> list[Change]:
        return self._power(nodes, self.power_down_mode, POWER_OFF_LIKE, NodePower.SHUTTING_DOWN)

    def drain(self, nodes: Sequence[str], reason: str) -> list[Change]:
        reason = reason.strip() or "greencpn"
        before, failures = self._known("drain", nodes)
        todo = [n for n in nodes if not before[n].drained and n not in failures]
        changes = [
            noop(n, "drained", True, f"already drained: {before[n].extra.get('reason', '')}")
            for n in nodes
            if n not in todo and n not in failures
        ]
        if todo:
            self._update(todo, "state=drain", f"reason={reason}")
            after = self._after(todo, before[todo[0]].power)
            changes += [
                Change(
                    n,
                    "drained",
                    False,
                    after[n].drained if self.verify else True,
                    True,
                    f"scontrol update state=drain reason={reason!r}",
                )
                for n in todo
            ]
        return raise_if_failed("slurm drain", changes, failures, nodes)

    def resume(self, nodes: Sequence[str]) -> list[Change]:
        before, failures = self._known("resume", nodes)
        todo = [n for n in nodes if before[n].drained]
        changes = [
            noop(n, "drained", False, "not drained")
            for n in nodes
            if n not in todo and n not in failures
        ]
        if todo:
            self._update(todo, "state=resume")
            after = self._after(todo, before[todo[0]].power)
            changes += [
                Change(
                    n,
                    "drained",
                    True,
                    after[n].drained if self.verify else False,
                    True,
                    "scontrol update state=resume",
                )
                for n in todo
            ]
        return raise_if_failed("slurm resume", changes, failures, nodes)


def build(s: HookSettings) -> SlurmHook:
    return SlurmHook.from_settings(s)
