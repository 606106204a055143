"""The suite's loopback guard (tests/conftest.py): no test reaches an address other than
loopback — a connect or send elsewhere fails before anything leaves the machine."""

from __future__ import annotations

import os
import socket

import pytest
import requests

from tests.conftest import NonLoopbackError


def test_a_connect_elsewhere_is_refused_before_it_is_tried():
    with socket.socket() as s:
        s.settimeout(5)
        with pytest.raises(NonLoopbackError, match="loopback guard"):
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed
        assert s.connect_ex(("127.0.0.1", 9)) != 0  # a real attempt on loopback (refused)
        with pytest.raises(NonLoopbackError):
            s.connect_ex(("2001:db8::1", 9))


def test_a_name_other_than_localhost_is_refused_without_a_lookup():
    with socket.socket() as s, pytest.raises(NonLoopbackError, match="example.com"):
        s.connect(("example.com", 80))


def test_loopback_works_for_tcp_and_udp():
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        with socket.create_connection(srv.getsockname(), timeout=5) as c:
            conn, _ = srv.accept()
            c.sendall(b"hi")
            assert conn.recv(2) == b"hi"
            conn.close()
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as r,
    ):
        r.bind(("127.0.0.1", 0))
        u.sendto(b"x", r.getsockname())
        assert r.recv(1) == b"x"
        with pytest.raises(NonLoopbackError):
            u.sendto(b"x", ("255.255.255.255", 9))  # a Wake-on-LAN broadcast


def test_http_clients_fail_fast_elsewhere():
    with pytest.raises(requests.ConnectionError, match="loopback guard"):
        requests.get("http://192.0.2.1:9/", timeout=5)


def test_the_wake_on_lan_hook_is_told_too():
    assert os.environ["GREENCPN_LOOPBACK_ONLY"] == "1"
