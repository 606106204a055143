"""Mutual TLS on top of HMAC, with certificates made by the openssl CLI in the test."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from greencpn.agent.auth import load_key
from greencpn.agent.client import AgentAuthError, AgentClient, AgentUnavailableError
from greencpn.agent.server import AgentServer, AgentSettings
from greencpn.errors import ConfigError

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(
        shutil.which("openssl") is None, reason="needs the openssl CLI (Debian: openssl)"
    ),
]

EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _ca(d: Path, name: str) -> None:
    _openssl(
        "req",
        "-x509",
        *EC,
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.pem",
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )


def _leaf(d: Path, name: str, ca: str, ext: str) -> None:
    (d / f"{name}.ext").write_text(ext + "\n")
    _openssl(
        "req", *EC, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        f"{ca}.pem",
        "-CAkey",
        f"{ca}.key",
        "-CAcreateserial",
        "-out",
        f"{name}.pem",
        "-days",
        "2",
        "-extfile",
        f"{name}.ext",
        cwd=d,
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    _ca(d, "fleet-ca")
    _ca(d, "rogue-ca")
    _leaf(d, "agent", "fleet-ca", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth")
    _leaf(d, "controller", "fleet-ca", "extendedKeyUsage=clientAuth")
    _leaf(d, "intruder", "rogue-ca", "extendedKeyUsage=clientAuth")
    return d


@pytest.fixture
def tls_agent(pki: Path, key_file: Path, fake_proc: Path, tiny_gpu_cls):  # noqa: ANN001, ANN201
    backend = tiny_gpu_cls()
    settings = AgentSettings(
        port=0,
        node_name="tls-node",
        proc_root=str(fake_proc),
        tls_cert=str(pki / "agent.pem"),
        tls_key=str(pki / "agent.key"),
        tls_client_ca=str(pki / "fleet-ca.pem"),
    )
    key = load_key(key_file)
    with AgentServer(backend, key, settings) as server:
        yield server, backend, key


def test_mutual_tls_with_valid_client_certificate(tls_agent, pki: Path) -> None:  # noqa: ANN001
    server, backend, key = tls_agent
    assert server.url.startswith("https://127.0.0.1:")
    client = AgentClient(
        server.url,
        key,
        tls_ca=str(pki / "fleet-ca.pem"),
        tls_cert=str(pki / "controller.pem"),
        tls_key=str(pki / "controller.key"),
    )
    assert client.status()["node"] == "tls-node"
    [change] = client.set_power_limit_w(220, index=1)
    assert change.changed and backend.limits_w == [300.0, 220.0]


@pytest.mark.parametrize("who", ["no certificate", "certificate from another CA"])
def test_clients_without_a_fleet_certificate_are_refused(tls_agent, pki: Path, who: str) -> None:  # noqa: ANN001
    server, backend, key = tls_agent
    cert = (
        {}
        if who == "no certificate"
        else {"tls_cert": str(pki / "intruder.pem"), "tls_key": str(pki / "intruder.key")}
    )
    client = AgentClient(server.url, key, tls_ca=str(pki / "fleet-ca.pem"), retries=0, **cert)
    # the right HMAC key is not enough without a fleet certificate
    # The server's alert ("certificate required" / "unknown ca") usually reaches the client
    # (AgentAuthError); sometimes the connection is already closed first (EOF: unavailable).
    with pytest.raises(
        (AgentAuthError, AgentUnavailableError), match="(?i)certificate|unknown ca|EOF"
    ):
        client.set_power_limit_w(150)
    assert backend.limits_w == [300.0, 300.0]


def test_client_refuses_an_agent_it_cannot_verify(tls_agent, pki: Path) -> None:  # noqa: ANN001
    server, _, key = tls_agent
    client = AgentClient(
        server.url,
        key,
        tls_ca=str(pki / "rogue-ca.pem"),
        tls_cert=str(pki / "controller.pem"),
        tls_key=str(pki / "controller.key"),
        retries=0,
    )
    with pytest.raises(AgentAuthError, match="verify"):
        client.status()


def test_plain_http_to_a_tls_agent_fails_cleanly(tls_agent) -> None:  # noqa: ANN001
    server, backend, key = tls_agent
    client = AgentClient(
        server.url.replace("https://", "http://"), key, retries=0, read_timeout_s=2
    )
    with pytest.raises(AgentUnavailableError):
        client.status()
    assert backend.calls == []


def test_incomplete_tls_settings_are_a_config_error(pki: Path, key_file: Path) -> None:
    with pytest.raises(ConfigError, match="together"):
        AgentServer(
            None, load_key(key_file), AgentSettings(port=0, tls_cert=str(pki / "agent.pem"))
        )
