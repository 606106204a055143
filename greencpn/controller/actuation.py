"""The act phase's guard: every hardware call goes through :class:`ActionGuard`.

The guard wraps each pool's node hook and each node's GPU backend. Before a mutating call
(drain, resume, power off/on, set a cap, restore defaults) it

1. calls the fence (the leader check): its epoch is written with the action; a
   :class:`~greencpn.controller.types.NotLeaderError` stops all further acting in this step
   (those actions are recorded ``skipped``);
2. skips pools whose lever is off or that are degraded (a permanent error in an earlier call);
3. marks the action ``started`` in the step ledger (committed before the call);
4. makes the call through :func:`greencpn.actuate.execution.execute` (the one place where an
   exception becomes an outcome), retrying a :class:`~greencpn.errors.TemporaryError` with
   exponential backoff (``retries``, ``retry_backoff_s``) inside the step;
5. marks it ``done`` (and writes a power-cycle row for power on/off) or ``failed``; a permanent
   error (or retries exhausted) marks the pool degraded, so the others continue.

The apply engine (:mod:`greencpn.actuate.apply`) keeps deciding the order and the safety rules;
the guard only sees the calls it makes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from greencpn.actuate.apply import Backends
from greencpn.actuate.base import GpuBackend, NodePowerHook, NodeStatus
from greencpn.actuate.execution import execute
from greencpn.clock import Clock
from greencpn.controller.ledger import StepLedger
from greencpn.controller.types import NotLeaderError
from greencpn.errors import PermanentError, TemporaryError


class SkippedAction(PermanentError):
    """The guard did not make this call (lever off, pool degraded, or not the leader)."""


@dataclass
class ActionGuard:
    ledger: StepLedger
    step_id: int
    clock: Clock
    sleep: Callable[[float], None]
    fence: Callable[[], int] | None = None
    retries: int = 3
    backoff_s: float = 2.0
    blocked: dict[str, str] = field(default_factory=dict)  # pool -> reason (degraded / lever)
    deposed: bool = False
    epoch: int | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)
    actions: list[dict[str, Any]] = field(default_factory=list)
    degraded: dict[str, str] = field(default_factory=dict)  # pools degraded in this step

    def _rows(self, kind: str, pool: str | None, targets: Sequence[str]) -> list[int]:
        """The step's ``intended`` row per target (one is written where reconcile wrote
        none); the caller holds the transaction."""
        now = self.clock.now()
        ids = []
        for t in targets:
            aid = self.ledger.find_intended(self.step_id, kind, t)
            if aid is None:
                aid = self.ledger.intend(self.step_id, now, kind, t, pool)
            ids.append(aid)
        return ids

    def _out(self, kind: str, pool: str | None, targets: Sequence[str], status: str, msg: str):
        for t in targets:
            self.actions.append(
                {
                    "kind": kind,
                    "target": t,
                    "pool": pool,
                    "detail": msg,
                    "status": status,
                    "epoch": self.epoch,
                }
            )

    def call(
        self,
        kind: str,
        pool: str | None,
        targets: Sequence[str],
        fn: Callable[[], Any],
        power_event: str | None = None,
    ) -> Any:
        now = self.clock.now()
        reason = None
        if self.deposed:
            reason = "not the leader any more: no further actions in this step"
        elif pool is not None and pool in self.blocked:
            reason = self.blocked[pool]
        if reason is None and self.fence is not None:
            try:
                self.epoch = int(self.fence())
            except NotLeaderError as exc:
                self.deposed = True
                reason = f"not the leader: {exc}"
                self.errors.append({"type": "not_leader", "where": kind, "message": str(exc)})
                self.ledger.failure(self.step_id, now, "not_leader", kind, str(exc))
        # one transaction: the rows found (or written) and marked started or skipped,
        # committed before the call
        with self.ledger.tx():
            ids = self._rows(kind, pool, targets)
            for aid in ids:
                if reason is not None:
                    self.ledger.finish(aid, now, "skipped", reason)
                else:
                    self.ledger.start(aid, now, self.epoch)
        if reason is not None:
            self._out(kind, pool, targets, "skipped", reason)
            raise SkippedAction(reason)

        def retried(exc: TemporaryError, n: int, wait: float) -> None:
            self.errors.append(
                {
                    "type": "actuator_temporary",
                    "where": f"{kind} {pool}",
                    "message": f"{exc} (retry {n}/{self.retries} in {wait:g} s)",
                }
            )
            self.ledger.failure(
                self.step_id, self.clock.now(), "actuator_temporary", f"{kind} {pool}", str(exc)
            )

        out = execute(
            fn,
            clock=self.clock,
            sleep=self.sleep,
            budget_s=math.inf,
            what=f"{kind} {pool}",
            retries=self.retries,
            backoff_s=self.backoff_s,
            on_retry=retried,
        )
        attempt = out.attempts - 1
        if out.exception is not None:
            why = "retries exhausted" if isinstance(out.exception, TemporaryError) else "permanent"
            self._failed(kind, pool, targets, ids, out.exception, why)
            raise out.exception
        result = out.result
        done_at = self.clock.now()
        with self.ledger.tx():  # the results (and power-cycle rows) of this call: one commit
            for aid, t in zip(ids, targets, strict=True):
                self.ledger.finish(
                    aid, done_at, "done", f"after {attempt} retries" if attempt else None
                )
                if power_event is not None:
                    self.ledger.power_cycle(
                        t, pool, power_event, done_at, self.step_id, aid, self.epoch
                    )
        self._out(kind, pool, targets, "done", "")
        return result

    def _failed(self, kind, pool, targets, ids, exc: Exception, why: str) -> None:
        at = self.clock.now()
        msg = f"{type(exc).__name__}: {exc}"
        with self.ledger.tx():
            for aid in ids:
                self.ledger.finish(aid, at, "failed", msg)
        self._out(kind, pool, targets, "failed", msg)
        typ = "actuator_permanent"
        self.errors.append({"type": typ, "where": f"{kind} {pool}", "message": f"{msg} ({why})"})
        self.ledger.failure(self.step_id, at, typ, f"{kind} {pool}", f"{msg} ({why})")
        if pool is not None:
            self.degraded[pool] = msg
            self.blocked[pool] = f"pool degraded in this step: {msg}"

    # ------------------------------------------------------------------ wrapping
    def wrap(self, backends: Backends, node_pool: dict[str, str]) -> Backends:
        hooks = {
            name: (None if h is None else GuardedHook(h, name, self))
            for name, h in backends.hooks.items()
        }

        def gpus(node: str) -> GpuBackend | None:
            gb = backends.gpus(node)
            return None if gb is None else GuardedGpu(gb, node, node_pool.get(node), self)

        # reading a job's GPU indices changes nothing: not guarded (a failed read keeps the
        # job on its pool's cap, reported by apply)
        return Backends(hooks=hooks, gpus=gpus, job_gpus=backends.job_gpus)


class GuardedHook:
    def __init__(self, inner: NodePowerHook, pool: str, guard: ActionGuard) -> None:
        self.inner = inner
        self.pool = pool
        self.guard = guard
        self.name = getattr(inner, "name", "hook")

    def status(self, nodes: Sequence[str]) -> list[NodeStatus]:
        return self.inner.status(nodes)

    def drain(self, nodes: Sequence[str], reason: str):
        return self.guard.call(
            "drain", self.pool, list(nodes), lambda: self.inner.drain(nodes, reason)
        )

    def resume(self, nodes: Sequence[str]):
        return self.guard.call("resume", self.pool, list(nodes), lambda: self.inner.resume(nodes))

    def power_off(self, nodes: Sequence[str]):
        return self.guard.call(
            "power_off", self.pool, list(nodes), lambda: self.inner.power_off(nodes), "off"
        )

    def power_on(self, nodes: Sequence[str]):
        return self.guard.call(
            "power_on", self.pool, list(nodes), lambda: self.inner.power_on(nodes), "on"
        )

    def __getattr__(self, item: str) -> Any:
        if item == "gpu_backend":
            raise AttributeError(item)  # GPU backends are wrapped through Backends.gpus
        return getattr(self.inner, item)


class GuardedGpu:
    def __init__(self, inner: GpuBackend, node: str, pool: str | None, guard: ActionGuard) -> None:
        self.inner = inner
        self.node = node
        self.pool = pool
        self.guard = guard

    def list_gpus(self):
        return self.inner.list_gpus()

    def set_power_limit_w(self, index: int, power_limit_w: float):
        return self.guard.call(
            "set_power_cap",
            self.pool,
            [f"{self.node}:gpu{index}"],
            lambda: self.inner.set_power_limit_w(index, power_limit_w),
        )

    def restore_defaults(self):
        return self.guard.call(
            "restore_defaults", self.pool, [self.node], lambda: self.inner.restore_defaults()
        )

    def __getattr__(self, item: str) -> Any:
        return getattr(self.inner, item)
