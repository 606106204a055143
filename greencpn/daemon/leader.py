"""Leader election with fencing through an etcd lease.

Two or more ``greencpn run`` on different head nodes share one etcd. Each campaigns by
granting itself a lease (TTL ``ttl_s``) and compare-and-creating the leader key bound to it
(``create_revision == 0``): exactly one succeeds. The leader refreshes its lease every
``ttl_s / 3``; if it dies, etcd drops the key when the lease expires and a follower's next
campaign (also every ``ttl_s / 3``) wins — failover takes at most about ``ttl_s × 4/3``.

The **epoch** is the leader key's ``create_revision``: etcd's global revision counter, so a
later leader always has a larger epoch. :meth:`Elector.fence` is what the controller calls
before every action. It returns the epoch only if

1. this instance won, and its last successful refresh was sent less than ``ttl_s`` minus a
   safety margin ago (monotonic clock: a paused or partitioned process knows its lease may be
   gone without asking), and
2. etcd confirms (linearizable read) that the leader key still exists with our lease and
   our epoch;

otherwise it raises :class:`NotLeaderError` and the act phase stops. If etcd is unreachable,
nobody can prove leadership: every instance refuses to act (shadow only) and says so.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from greencpn.daemon.api import NotLeaderError
from greencpn.daemon.settings import EtcdSettings

log = logging.getLogger("greencpn.daemon.leader")


@dataclass(frozen=True)
class LeaderState:
    """What :meth:`Elector.state` reports (status, metrics, /readyz)."""

    enabled: bool  # False: no etcd configured, single instance, always leader
    is_leader: bool
    epoch: int | None
    holder: str | None  # the current leader's name, as far as we know
    reachable: bool  # etcd answered the last request
    detail: str


class SingleInstance:
    """No etcd configured: this instance is the only one and always leads (epoch 0).

    Still refuses actions once :meth:`stop_acting` was called (SIGTERM with ``abandon``)."""

    def __init__(self) -> None:
        self._stop_reason: str | None = None

    def start(self) -> None:
        pass

    def stop(self, resign: bool = True) -> None:
        pass

    def stop_acting(self, reason: str) -> None:
        self._stop_reason = reason

    def resume_acting(self) -> None:
        self._stop_reason = None

    def fence(self) -> int:
        if self._stop_reason:
            raise NotLeaderError(f"not acting: {self._stop_reason}")
        return 0

    def campaign_once(self) -> bool:
        return True

    def state(self) -> LeaderState:
        return LeaderState(
            False, True, 0, "this instance", True, "single instance (no [daemon.etcd])"
        )


class Elector:
    """An etcd lease election; :meth:`fence` is the controller's fence callable.

    ``client_factory`` builds the etcd3gw client for an endpoint (tests inject failures);
    ``monotonic`` is the clock for lease deadlines (``time.monotonic``).
    """

    SAFETY_MARGIN = 0.2  # fraction of the TTL we do not trust at the end of a lease

    def __init__(
        self,
        settings: EtcdSettings,
        *,
        name: str | None = None,
        client_factory: Callable[[str, float], Any] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        on_change: Callable[[LeaderState], None] | None = None,
    ) -> None:
        self.settings = settings
        self.name = name or settings.name or f"{socket.gethostname()}:{os.getpid()}"
        self._factory = client_factory or _etcd3gw_client
        self._monotonic = monotonic
        self._on_change = on_change
        self._lock = threading.RLock()
        self._client: Any = None
        self._endpoint_i = 0
        self._lease: Any = None
        self._epoch: int | None = None
        self._valid_until = 0.0
        self._holder: str | None = None
        self._reachable = True
        self._detail = "not campaigned yet"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stop_reason: str | None = None
        self._was_leader = False

    # ------------------------------------------------------------------ etcd plumbing

    def _etcd(self) -> Any:
        if self._client is None:
            ep = self.settings.endpoints[self._endpoint_i % len(self.settings.endpoints)]
            self._client = self._factory(ep, self.settings.timeout_s)
        return self._client

    def _failed(self, exc: Exception, what: str) -> None:
        self._reachable = False
        self._detail = f"etcd unreachable ({what}: {type(exc).__name__}: {exc}); not acting"
        self._client = None
        self._endpoint_i += 1  # try the next endpoint next time

    # ------------------------------------------------------------------ campaign / refresh

    def campaign_once(self) -> bool:
        """One election round: refresh our lease if we lead, else try to take the key.

        Returns whether this instance leads afterwards. Never raises for etcd faults."""
        with self._lock:
            try:
                if self._lease is not None and self._epoch is not None:
                    self._refresh()
                else:
                    self._try_acquire()
                self._reachable = True
            except Exception as exc:  # etcd down / timeouts: we cannot prove anything
                self._failed(exc, "campaign")
                if self._lease is not None and self._monotonic() >= self._valid_until:
                    self._lose("lease expired while etcd was unreachable")
            leader = self._is_valid_leader()
        self._notify(leader)
        return leader

    def _try_acquire(self) -> None:
        etcd = self._etcd()
        sent = self._monotonic()
        lease = etcd.lease(ttl=self.settings.ttl_s)
        value = json.dumps({"name": self.name, "lease": lease.id})
        if etcd.create(self.settings.key, value, lease=lease):
            kvs = etcd.get(self.settings.key, metadata=True)
            if not kvs:
                lease.revoke()
                raise RuntimeError("leader key vanished right after creating it")
            meta = kvs[0][1]
            self._lease = lease
            self._epoch = int(meta["create_revision"])
            self._valid_until = sent + self.settings.ttl_s * (1 - self.SAFETY_MARGIN)
            self._holder = self.name
            self._detail = f"leader (epoch {self._epoch})"
            log.warning("became leader: epoch %s, lease %x", self._epoch, lease.id)
        else:
            with _suppress():
                lease.revoke()
            kvs = etcd.get(self.settings.key)
            self._holder = _holder_name(kvs[0]) if kvs else None
            self._detail = f"follower (leader: {self._holder or 'none yet'})"

    def _refresh(self) -> None:
        etcd = self._etcd()
        sent = self._monotonic()
        ttl = self._lease.refresh()
        if ttl <= 0:
            self._lose("lease expired (refresh came too late)")
            self._try_acquire()
            return
        kvs = etcd.get(self.settings.key, metadata=True)
        if not kvs or int(kvs[0][1].get("create_revision", -1)) != self._epoch:
            self._lose("leader key taken over or deleted")
            return
        self._valid_until = sent + self.settings.ttl_s * (1 - self.SAFETY_MARGIN)
        self._detail = f"leader (epoch {self._epoch})"

    def _lose(self, why: str) -> None:
        if self._epoch is not None:
            log.warning("lost leadership (epoch %s): %s", self._epoch, why)
        self._lease = None
        self._epoch = None
        self._valid_until = 0.0
        self._holder = None
        self._detail = f"follower ({why})"

    def _is_valid_leader(self) -> bool:
        """We won, our lease cannot have expired yet, and etcd answered the last request (while
        it does not, nobody can prove leadership, so nobody counts as leader)."""
        return self._epoch is not None and self._reachable and self._monotonic() < self._valid_until

    def _notify(self, leader: bool) -> None:
        if leader != self._was_leader:
            self._was_leader = leader
            if self._on_change is not None:
                self._on_change(self.state())

    # ------------------------------------------------------------------ the fence

    def fence(self) -> int:
        """The current epoch, or :class:`NotLeaderError` (not leader, lease stale, etcd down)."""
        with self._lock:
            if self._stop_reason:
                raise NotLeaderError(f"not acting: {self._stop_reason}")
            if self._epoch is None:
                raise NotLeaderError(f"not the leader: {self._detail}")
            if self._monotonic() >= self._valid_until:
                epoch = self._epoch
                self._lose("lease not refreshed in time")
                raise NotLeaderError(f"lease of epoch {epoch} may have expired; not acting")
            try:
                kvs = self._etcd().get(self.settings.key, metadata=True)
            except Exception as exc:
                self._failed(exc, "fence")
                raise NotLeaderError(self._detail) from None
            self._reachable = True
            if not kvs or int(kvs[0][1].get("create_revision", -1)) != self._epoch:
                epoch = self._epoch
                self._lose("leader key taken over or deleted")
                raise NotLeaderError(f"deposed: epoch {epoch} is no longer the leader")
            return self._epoch

    def stop_acting(self, reason: str) -> None:
        """From now on :meth:`fence` refuses (SIGTERM with ``on_sigterm = 'abandon'``)."""
        with self._lock:
            self._stop_reason = reason

    def resume_acting(self) -> None:
        with self._lock:
            self._stop_reason = None

    # ------------------------------------------------------------------ background loop

    def start(self) -> None:
        """Campaign now, then every ``ttl_s / 3`` in a daemon thread."""
        self.campaign_once()
        self._thread = threading.Thread(target=self._loop, name="greencpn-leader", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        period = self.settings.ttl_s / 3.0
        while not self._stop.wait(period):
            self.campaign_once()

    def stop(self, resign: bool = True) -> None:
        """Stop campaigning; ``resign`` revokes the lease so a follower takes over at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.timeout_s * 3)
        with self._lock:
            if resign and self._lease is not None:
                try:
                    self._lease.revoke()
                    log.warning("resigned leadership (epoch %s)", self._epoch)
                except Exception as exc:
                    log.warning("could not revoke the lease (%s); it expires by itself", exc)
            self._lose("stopped")

    def state(self) -> LeaderState:
        with self._lock:
            leader = self._is_valid_leader()
            return LeaderState(
                True,
                leader,
                self._epoch if leader else None,
                self.name if leader else self._holder,
                self._reachable,
                self._detail,
            )


def _holder_name(raw: bytes | str) -> str | None:
    try:
        return str(json.loads(raw)["name"])
    except Exception:
        return None


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


def _etcd3gw_client(endpoint: str, timeout_s: float) -> Any:
    import etcd3gw

    host, _, port = endpoint.removeprefix("http://").rpartition(":")
    return etcd3gw.client(host=host, port=int(port), timeout=timeout_s, api_path="/v3/")
