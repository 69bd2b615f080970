"""TLS to engines, against a real TLS server made in the test with a throw-away CA (openssl): a private CA
bundle, mutual TLS with a client certificate, verification off (with a warning), and the refusals."""

from __future__ import annotations

import logging
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest
from llama_orch_gen.contracts.config import TlsConfig

from llama_orch.adapters.http_policy import error_for_exception
from llama_orch.adapters.http_transport import EngineTransport
from llama_orch.adapters.tls import tls_context
from llama_orch.errors import ConfigError
from tests.support.scripted_server import ScriptedServer, answer


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ca.pem/ca.key, server.pem/server.key for 127.0.0.1 (signed by the CA), client.pem/client.key."""
    root = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test CA",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=root)  # fmt: skip
    (root / "san.ext").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    for name in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", cwd=root)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "2", "-extfile", "san.ext", "-out", f"{name}.pem", cwd=root)  # fmt: skip
    return root


def _server_tls(pki: Path, *, require_client: bool = False) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki / "server.pem", pki / "server.key")
    if require_client:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(pki / "ca.pem")
    return context


async def _get(url: str, tls: ssl.SSLContext | None) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, transport=EngineTransport(tls=tls), timeout=10) as http:
        return await http.get("/health")


async def test_a_private_ca_bundle_verifies_the_engine(pki: Path) -> None:
    async with ScriptedServer(answer(b"{}"), tls=_server_tls(pki)) as url:
        assert url.startswith("https://")
        response = await _get(url, tls_context(TlsConfig(ca_bundle=str(pki / "ca.pem")), "r0"))
        assert response.status_code == 200


async def test_an_unknown_ca_is_refused_as_unreachable(pki: Path) -> None:
    async with ScriptedServer(answer(b"{}"), tls=_server_tls(pki)) as url:
        with pytest.raises(httpx.ConnectError) as caught:
            await _get(url, None)  # the system's trust store does not know the test CA
        assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
        assert error_for_exception(caught.value).code == "POOL_UNAVAILABLE"


async def test_mutual_tls_sends_the_client_certificate(pki: Path) -> None:
    async with ScriptedServer(answer(b"{}"), tls=_server_tls(pki, require_client=True)) as url:
        with_cert = TlsConfig(
            ca_bundle=str(pki / "ca.pem"), client_cert=str(pki / "client.pem"), client_key=str(pki / "client.key")
        )
        assert (await _get(url, tls_context(with_cert, "r0"))).status_code == 200
        with pytest.raises(httpx.HTTPError):
            await _get(url, tls_context(TlsConfig(ca_bundle=str(pki / "ca.pem")), "r0"))


async def test_verify_off_accepts_any_certificate_and_says_so(pki: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "llama_orch.adapters"):
        context = tls_context(TlsConfig(verify=False), "pool p replica r0")
    assert "verification is OFF" in caplog.text and "replica r0" in caplog.text
    async with ScriptedServer(answer(b"{}"), tls=_server_tls(pki)) as url:
        assert (await _get(url, context)).status_code == 200


def test_missing_tls_files_are_a_startup_error_naming_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tls.ca_bundle"):
        tls_context(TlsConfig(ca_bundle=str(tmp_path / "absent.pem")), "replica r0")
    (tmp_path / "junk.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="replica r0"):
        tls_context(TlsConfig(ca_bundle=str(tmp_path / "junk.pem")), "replica r0")


def test_tls_settings_on_a_plain_http_replica_are_refused(pki: Path) -> None:
    from llama_orch.adapters.factory import build_registry
    from tests.service.helpers import make_config

    replica = {"id": "r0", "base_url": "http://127.0.0.1:8080", "tls": {"ca_bundle": str(pki / "ca.pem")}}
    with pytest.raises(ConfigError, match="not https"):
        build_registry(make_config({"id": "p", "engine": "llamacpp", "replicas": [replica]}))
    replica["base_url"] = "https://127.0.0.1:8443"
    assert len(build_registry(make_config({"id": "p", "engine": "llamacpp", "replicas": [replica]}))) == 1
