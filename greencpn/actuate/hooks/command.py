"""``command`` hook: user scripts, called the way Slurm calls SuspendProgram / ResumeProgram.

Each operation runs one configured command with the nodes as a **hostlist expression**
(``node[01-03,07]``) appended as its last argument — or substituted where an argument holds
``{hostlist}``. ``{reason}`` is substituted too, and the reason is in ``GREENCPN_REASON``.

Config keys (``[pools.hook]`` with ``kind = "command"``):

* ``power_on``, ``power_off``, ``drain``, ``resume``, ``status`` — command string or list;
  any may be left out (that operation then raises :class:`PermanentError`, except ``status``:
  without it every node is ``unknown`` and the power commands are always run).
* ``timeout_s`` (default 120) — per call; on timeout the process group is killed.
* ``timeouts_s`` — per operation overrides, e.g. ``{ power_on = 600 }``.
* ``permanent_exit_codes`` (default ``[]``) — exit statuses meaning "do not retry"
  (126 and 127 always are); other non-zero statuses raise :class:`TemporaryError`.
* ``env`` — extra environment variables for the scripts.

The status command prints one line per node: ``<node> <state> [drained] [jobs=N] [...]`` with
state one of ``on off booting shutting_down failed unknown`` (``up``/``down`` accepted too).
A line without ``jobs=N`` means the work on that node is **unknown**, which counts as busy:
``greencpn apply`` never powers such a node off.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from greencpn.actuate.base import Change, NodePower, NodeStatus
from greencpn.actuate.hooks._common import (
    POWER_OFF_LIKE,
    POWER_ON_LIKE,
    HookSettings,
    in_order,
    log,
    noop,
    power_change,
    run_command,
)
from greencpn.actuate.hostlist import compress
from greencpn.errors import PermanentError, TemporaryError

OPERATIONS = ("power_on", "power_off", "drain", "resume", "status")

_STATE_WORDS = {
    "on": NodePower.ON,
    "up": NodePower.ON,
    "off": NodePower.OFF,
    "down": NodePower.OFF,
    "booting": NodePower.BOOTING,
    "shutting_down": NodePower.SHUTTING_DOWN,
    "failed": NodePower.FAILED,
    "unknown": NodePower.UNKNOWN,
}


def parse_status_lines(text: str, nodes: Sequence[str]) -> list[NodeStatus]:
    """Parse ``<node> <state> [drained] [jobs=N]`` lines; nodes not printed are ``unknown``.

    Raises:
        TemporaryError: a line cannot be parsed (the script is misbehaving).
    """
    seen: dict[str, NodeStatus] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split()
        if len(words) < 2 or words[1].lower() not in _STATE_WORDS:
            raise TemporaryError(
                f"status command output line {lineno} {line!r}: expected '<node> <state>' "
                f"with state one of {sorted(_STATE_WORDS)}"
            )
        drained = False
        jobs: int | None = None  # no jobs=N: the work on the node is unknown (= busy)
        extra: dict[str, object] = {}
        for word in words[2:]:
            if word.lower() == "drained":
                drained = True
            elif word.lower().startswith("jobs="):
                try:
                    jobs = int(word[5:])
                    if jobs < 0:
                        raise ValueError
                except ValueError:
                    raise TemporaryError(
                        f"status command output line {lineno}: bad jobs count {word!r}"
                    ) from None
            elif "=" in word:
                k, v = word.split("=", 1)
                extra[k] = v
        seen[words[0]] = NodeStatus(
            words[0], _STATE_WORDS[words[1].lower()], drained, jobs, detail=line, extra=extra
        )
    return [
        seen.get(n, NodeStatus(n, NodePower.UNKNOWN, detail="not reported by the status command"))
        for n in nodes
    ]


class CommandHook:
    """Runs user scripts with a hostlist argument (see the module docstring for the keys)."""

    name = "command"

    def __init__(
        self,
        commands: Mapping[str, list[str] | None],
        *,
        timeout_s: float = 120.0,
        timeouts_s: Mapping[str, float] | None = None,
        permanent_exit_codes: Sequence[int] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.commands = {op: (list(c) if c else None) for op, c in commands.items()}
        self.timeout_s = timeout_s
        self.timeouts_s = dict(timeouts_s or {})
        self.permanent_exit_codes = tuple(permanent_exit_codes)
        self.env = dict(env or {})

    @classmethod
    def from_settings(cls, s: HookSettings) -> CommandHook:
        commands = {op: s.argv(op) for op in OPERATIONS}
        timeouts: dict[str, float] = {}
        raw = s.get("timeouts_s", {})
        if not isinstance(raw, Mapping) or any(k not in OPERATIONS for k in raw):
            raise s.error(
                "timeouts_s",
                f"must be a table with keys among {OPERATIONS}, got {raw!r}",
                "write timeouts_s = { power_on = 600 }",
            )
        for k, v in raw.items():
            if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
                raise s.error(
                    f"timeouts_s.{k}",
                    f"must be a positive number, got {v!r}",
                    "write a number of seconds",
                )
            timeouts[k] = float(v)
        hook = cls(
            commands,
            timeout_s=s.float_("timeout_s", 120.0, minimum=0.001),
            timeouts_s=timeouts,
            permanent_exit_codes=s.int_list("permanent_exit_codes", []),
            env=s.str_map("env"),
        )
        s.check_unknown()
        return hook

    # ----------------------------------------------------------------------------------------

    def _run(self, op: str, nodes: Sequence[str], reason: str = "") -> str:
        argv = self.commands.get(op)
        if not argv:
            raise PermanentError(
                f"command hook: no '{op}' command configured — add {op} = \"/path/script\" "
                "to the pool's [pools.hook] table"
            )
        hostlist = compress(nodes)
        if any("{hostlist}" in a for a in argv):
            full = [a.replace("{hostlist}", hostlist).replace("{reason}", reason) for a in argv]
        else:
            full = [a.replace("{reason}", reason) for a in argv] + [hostlist]
        env = dict(self.env)
        env["GREENCPN_REASON"] = reason
        env["GREENCPN_OPERATION"] = op
        log.info("command hook %s %s", op, hostlist)
        result = run_command(
            full,
            timeout_s=self.timeouts_s.get(op, self.timeout_s),
            env=env,
            permanent_exit_codes=self.permanent_exit_codes,
        )
        return result.stdout

    def status(self, nodes: Sequence[str]) -> list[NodeStatus]:
        nodes = list(nodes)
        if not nodes:
            return []
        if not self.commands.get("status"):
            return [
                NodeStatus(n, NodePower.UNKNOWN, detail="no status command configured")
                for n in nodes
            ]
        return parse_status_lines(self._run("status", nodes), nodes)

    def _power(
        self, op: str, nodes: Sequence[str], target: NodePower, already: tuple[NodePower, ...]
    ) -> list[Change]:
        before = {s.name: s for s in self.status(nodes)}
        todo = [n for n in nodes if before[n].power not in already]
        changes = [
            noop(n, "power", before[n].power.value, f"already {before[n].power.value}")
            for n in nodes
            if n not in todo
        ]
        if todo:
            self._run(op, todo)
            changes += [power_change(n, before[n].power, target, f"{op} command ran") for n in todo]
        return in_order(nodes, changes)

    def power_on(self, nodes: Sequence[str]) -> list[Change]:
        return self._power("power_on", nodes, NodePower.BOOTING, POWER_ON_LIKE)

    def power_off(self, nodes: Sequence[str]) -> list[Change]:
        return self._power("power_off", nodes, NodePower.SHUTTING_DOWN, POWER_OFF_LIKE)

    def drain(self, nodes: Sequence[str], reason: str) -> list[Change]:
        before = {s.name: s for s in self.status(nodes)}
        has_status = bool(self.commands.get("status"))
        todo = [n for n in nodes if not (has_status and before[n].drained)]
        changes = [noop(n, "drained", True, "already drained") for n in nodes if n not in todo]
        if todo:
            self._run("drain", todo, reason)
            changes += [
                Change(
                    n,
                    "drained",
                    before[n].drained if has_status else None,
                    True,
                    True,
                    f"drain command ran: {reason}",
                )
                for n in todo
            ]
        return in_order(nodes, changes)

    def resume(self, nodes: Sequence[str]) -> list[Change]:
        before = {s.name: s for s in self.status(nodes)}
        has_status = bool(self.commands.get("status"))
        todo = [n for n in nodes if not has_status or before[n].drained]
        changes = [noop(n, "drained", False, "not drained") for n in nodes if n not in todo]
        if todo:
            self._run("resume", todo)
            changes += [
                Change(
                    n, "drained", True if has_status else None, False, True, "resume command ran"
                )
                for n in todo
            ]
        return in_order(nodes, changes)


def build(s: HookSettings) -> CommandHook:
    return CommandHook.from_settings(s)
