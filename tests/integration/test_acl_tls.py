"""HTTPS to an ACL-enabled Consul whose certificate the test generates (openssl): trusted with the CA given
explicitly or through CONSUL_CACERT, refused clearly without it."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from acl_support import acl_consul, provisioned, registration

from consul_agents import AgentRegistry, DiscoveryRequest, RegistryUnavailableError
from consul_agents.dev import ConsulDevServer

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def make_ca(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed CA certificate and key (EC P-256, valid one day)."""
    openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
        "-subj", f"/CN={name}", "-keyout", f"{name}.key", "-out", f"{name}.pem",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )  # fmt: skip
    return folder / f"{name}.pem", folder / f"{name}.key"


def make_server_cert(folder: Path, ca: Path, ca_key: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, signed by ``ca``."""
    (folder / "san.cnf").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
    )
    openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-subj", "/CN=server.dc1.consul", "-keyout", "server.key", "-out", "server.csr", cwd=folder,
    )  # fmt: skip
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
        "-days", "1", "-extfile", "san.cnf", "-out", "server.pem", cwd=folder,
    )  # fmt: skip
    return folder / "server.pem", folder / "server.key"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("pki")
    ca, ca_key = make_ca(folder, "test-ca")
    other_ca, _ = make_ca(folder, "other-ca")
    cert, key = make_server_cert(folder, ca, ca_key)
    return {"ca": ca, "other_ca": other_ca, "cert": cert, "key": key}


@pytest.fixture(scope="module")
def server(pki: dict[str, Path]) -> Iterator[ConsulDevServer]:
    tls = {"cert_file": str(pki["cert"]), "key_file": str(pki["key"]), "ca_file": str(pki["ca"])}
    with acl_consul(https=True, extra_config=tls) as started:
        yield started


@pytest.fixture(scope="module")
def token(server: ConsulDevServer) -> str:
    spec = {"name": "alpha-registrar", "kind": "registrar", "agent_types": ["alpha"]}
    return provisioned(server, spec)["alpha-registrar"].secret_id


def https(server: ConsulDevServer) -> str:
    assert server.https_addr is not None
    return server.https_addr


async def test_https_with_explicit_ca_cert(
    server: ConsulDevServer, pki: dict[str, Path], token: str, unique: str
) -> None:
    """With ca_cert= naming the CA that signed Consul's certificate, registration works over HTTPS."""
    async with AgentRegistry(https(server), token, ca_cert=str(pki["ca"])) as reg:
        agent_id = await reg.register_agent(registration("alpha", unique))
        assert await reg.deregister_agent(agent_id)


async def test_https_with_consul_cacert(
    server: ConsulDevServer, pki: dict[str, Path], token: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN and CONSUL_CACERT alone are enough to reach Consul over HTTPS."""
    monkeypatch.setenv("CONSUL_HTTP_ADDR", https(server))
    monkeypatch.setenv("CONSUL_HTTP_TOKEN", token)
    monkeypatch.setenv("CONSUL_CACERT", str(pki["ca"]))
    async with AgentRegistry() as reg:
        assert reg.settings.scheme == "https"
        agent_id = await reg.register_agent(registration("alpha", unique))
        assert await reg.deregister_agent(agent_id)


@pytest.mark.parametrize("ca", [None, "other_ca"])
async def test_https_without_the_right_ca_fails_clearly(
    server: ConsulDevServer, pki: dict[str, Path], token: str, ca: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the signing CA (none, or another one), it refuses Consul with a TLS certificate error."""
    monkeypatch.delenv("CONSUL_CACERT", raising=False)
    async with AgentRegistry(https(server), token, ca_cert=str(pki[ca]) if ca else None) as reg:
        with pytest.raises(RegistryUnavailableError) as caught:
            await reg.discover_agents(DiscoveryRequest())
    message = str(caught.value)
    assert "certificate" in message and "TLS" in message and "CONSUL_CACERT" in message
    assert token not in message
