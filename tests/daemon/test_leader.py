"""Leader election and fencing against a REAL etcd 3.4 on 127.0.0.1 (session fixture)."""

from __future__ import annotations

import time

import pytest
from conftest import EtcdServer, free_port

from greencpn.controller.types import NotLeaderError
from greencpn.daemon.leader import Elector
from greencpn.daemon.settings import EtcdSettings


class FakeMonotonic:
    """A monotonic clock the test moves (a 'paused' process sees time jump)."""

    def __init__(self) -> None:
        self.t = time.monotonic()

    def __call__(self) -> float:
        return self.t


def elector(etcd: EtcdServer, key: str, name: str, ttl: int = 2, **kw: object) -> Elector:
    return Elector(EtcdSettings(endpoints=[etcd.endpoint], key=key, ttl_s=ttl), name=name, **kw)  # type: ignore[arg-type]


def test_exactly_one_of_two_leads_and_only_it_passes_the_fence(
    etcd: EtcdServer, etcd_key: str
) -> None:
    a, b = elector(etcd, etcd_key, "a"), elector(etcd, etcd_key, "b")
    assert a.campaign_once() is True
    assert b.campaign_once() is False
    assert a.campaign_once() is True and b.campaign_once() is False  # refresh / retry
    epoch = a.fence()
    assert epoch > 0 and a.state().epoch == epoch
    with pytest.raises(NotLeaderError, match="not the leader: follower \\(leader: a\\)"):
        b.fence()
    assert b.state().holder == "a" and not b.state().is_leader
    a.stop(resign=True)
    assert b.campaign_once() is True  # revoked lease: b takes over at once
    assert b.fence() > epoch  # the epoch (create_revision) only grows


def test_a_paused_leader_is_deposed_and_its_late_actions_are_refused(
    etcd: EtcdServer, etcd_key: str
) -> None:
    mono = FakeMonotonic()
    a = elector(etcd, etcd_key, "a", ttl=2, monotonic=mono)
    b = elector(etcd, etcd_key, "b", ttl=2)
    assert a.campaign_once()
    old_epoch = a.fence()
    # a "pauses" (no refresh) past its TTL; etcd expires the lease, b wins
    deadline = time.monotonic() + 10
    while not b.campaign_once():
        assert time.monotonic() < deadline, "b did not take over after a's lease expired"
        time.sleep(0.2)
    new_epoch = b.fence()
    assert new_epoch > old_epoch
    # a wakes up: its own clock says the lease is stale -> refused without asking etcd
    mono.t += 5
    with pytest.raises(NotLeaderError, match=f"lease of epoch {old_epoch} may have expired"):
        a.fence()
    with pytest.raises(NotLeaderError):
        a.fence()  # and stays refused
    assert not a.state().is_leader


def test_a_deposed_leader_whose_clock_has_not_moved_is_refused_by_etcd(
    etcd: EtcdServer, etcd_key: str
) -> None:
    """Even if the local deadline has not passed (clock skew, a bug), the fence's linearizable
    read of the leader key refuses a deposed leader."""
    mono = FakeMonotonic()
    a = elector(etcd, etcd_key, "a", ttl=2, monotonic=mono)
    b = elector(etcd, etcd_key, "b", ttl=2)
    assert a.campaign_once()
    a._lease.revoke()  # the lease is gone in etcd; a's local deadline still looks fine
    assert b.campaign_once()
    with pytest.raises(NotLeaderError, match="deposed"):
        a.fence()


def test_etcd_unreachable_means_nobody_acts_and_it_says_so(etcd_key: str) -> None:
    dead = Elector(
        EtcdSettings(endpoints=[f"127.0.0.1:{free_port()}"], key=etcd_key, ttl_s=2, timeout_s=0.5),
        name="x",
    )
    assert dead.campaign_once() is False
    st = dead.state()
    assert not st.is_leader and not st.reachable
    assert "etcd unreachable" in st.detail and "not acting" in st.detail
    with pytest.raises(NotLeaderError, match="etcd unreachable"):
        dead.fence()


def test_leader_loses_etcd_mid_term_then_refuses(etcd: EtcdServer, etcd_key: str) -> None:
    a = elector(etcd, etcd_key, "a", ttl=2)
    assert a.campaign_once()
    a.settings = EtcdSettings(
        endpoints=[f"127.0.0.1:{free_port()}"], key=etcd_key, ttl_s=2, timeout_s=0.5
    )
    a._client = None  # next request goes to the dead endpoint
    with pytest.raises(NotLeaderError, match="etcd unreachable"):
        a.fence()


def test_background_refresh_keeps_leadership_past_the_ttl(etcd: EtcdServer, etcd_key: str) -> None:
    a, b = elector(etcd, etcd_key, "a", ttl=2), elector(etcd, etcd_key, "b", ttl=2)
    a.start()
    try:
        time.sleep(3.0)  # longer than the TTL: only the refresh thread keeps a leading
        assert b.campaign_once() is False
        assert a.fence() > 0
    finally:
        a.stop()
    assert b.campaign_once() is True
    b.stop()


def test_stop_acting_refuses_even_the_leader(etcd: EtcdServer, etcd_key: str) -> None:
    a = elector(etcd, etcd_key, "a")
    assert a.campaign_once()
    a.stop_acting("SIGTERM (on_sigterm = abandon)")
    with pytest.raises(NotLeaderError, match="not acting: SIGTERM"):
        a.fence()
    a.resume_acting()
    assert a.fence() > 0
    a.stop()
