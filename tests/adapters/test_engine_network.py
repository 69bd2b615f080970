"""How a replica reaches its engine: TLS per replica against a real TLS server with a throw-away CA made here by
the openssl CLI (CA bundle, mutual TLS, verification off with a warning), proxy variables refused loudly, and
per-host connection limits that cannot starve another host."""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest
from llama_orch_gen.contracts.config import PoolConfig, ReplicaConfig

from llama_orch.adapters.base import HealthState
from llama_orch.adapters.factory import build_adapter
from llama_orch.adapters.http_transport import EngineTransport
from llama_orch.adapters.network import check_direct
from llama_orch.errors import ConfigError
from tests.support.scripted_server import ScriptedServer, answer, chunked

POOL = PoolConfig.model_validate(
    {"id": "p", "engine": "vllm", "model": "m", "replicas": [{"id": "r", "base_url": "http://x"}]}
)


class Pki:
    """A throw-away CA, a server certificate for 127.0.0.1/localhost and a client certificate, all signed by it."""

    def __init__(self, root: Path) -> None:
        openssl = shutil.which("openssl")
        assert openssl, "the openssl command is needed to make the test certificates"  # never skipped: CI has it
        self.root = root
        self._openssl = openssl
        self.ca = self._ca()
        self.server = self._leaf("server", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth")
        self.client = self._leaf("client", "extendedKeyUsage=clientAuth")
        other = Pki.__new__(Pki)
        other.root, other._openssl = root / "other", openssl
        other.root.mkdir()
        self.other_ca = other._ca()

    def _run(self, *args: str) -> None:
        subprocess.run([self._openssl, *args], check=True, capture_output=True, cwd=self.root, timeout=60)

    def _ca(self) -> Path:
        self._run(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=llama-orch test CA",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
        return self.root / "ca.pem"

    def _leaf(self, name: str, extensions: str) -> tuple[Path, Path]:
        ext = self.root / f"{name}.ext"
        ext.write_text(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nsubjectKeyIdentifier=hash\n"
            f"authorityKeyIdentifier=keyid,issuer\n{extensions}\n"
        )
        self._run(
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
        )  # fmt: skip
        self._run(
            "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", str(ext),
        )  # fmt: skip
        return self.root / f"{name}.pem", self.root / f"{name}.key"

    def server_context(self, *, require_client_cert: bool = False) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*map(str, self.server))
        if require_client_cert:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(str(self.ca))
        return context


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


async def _vllm(request: bytes) -> tuple[bytes | list[bytes] | None, bool]:
    if request.startswith(b"GET /version"):
        return (await answer(b'{"version":"0.33.0"}')(request))[0], False
    return (await answer(b"")(request))[0], False  # /health


async def health_of(url: str, tls: dict[str, object] | None) -> tuple[HealthState, str | None]:
    replica = ReplicaConfig.model_validate({"id": "r", "base_url": url, **({"tls": tls} if tls else {})})
    adapter = build_adapter(POOL, replica)
    try:
        health = await adapter.health()
    finally:
        await adapter.aclose()
    return health.state, health.detail


async def test_a_replica_trusts_the_engine_signed_by_its_ca_bundle(pki: Pki) -> None:
    async with ScriptedServer(_vllm, tls=pki.server_context()) as url:
        assert (await health_of(url, {"ca_file": str(pki.ca)}))[0] is HealthState.HEALTHY


@pytest.mark.parametrize("tls", [None, "other"], ids=["system-trust-store", "another-ca"])
async def test_an_engine_certificate_from_an_unknown_ca_is_refused(pki: Pki, tls: str | None) -> None:
    settings = {"ca_file": str(pki.other_ca)} if tls else None
    async with ScriptedServer(_vllm, tls=pki.server_context()) as url:
        state, detail = await health_of(url, settings)
    assert state is HealthState.UNHEALTHY and "CERTIFICATE_VERIFY_FAILED" in (detail or ""), detail


async def test_mutual_tls_presents_the_client_certificate(pki: Pki) -> None:
    cert, key = pki.client
    async with ScriptedServer(_vllm, tls=pki.server_context(require_client_cert=True)) as url:
        with_cert = {"ca_file": str(pki.ca), "client_cert_file": str(cert), "client_key_file": str(key)}
        assert (await health_of(url, with_cert))[0] is HealthState.HEALTHY
        assert (await health_of(url, {"ca_file": str(pki.ca)}))[0] is HealthState.UNHEALTHY


async def test_verification_off_accepts_any_certificate_and_says_so_loudly(
    pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    async with ScriptedServer(_vllm, tls=pki.server_context()) as url:
        with caplog.at_level(logging.WARNING, logger="llama_orch.adapters"):
            assert (await health_of(url, {"verify": False}))[0] is HealthState.HEALTHY
    assert any("TLS VERIFICATION IS OFF" in r.getMessage() and "'r'" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("field", ["ca_file", "client_cert_file"])
def test_an_unreadable_tls_file_is_a_configuration_error_at_startup(field: str, tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.pem")
    replica = ReplicaConfig.model_validate({"id": "r", "base_url": "https://e", "tls": {field: missing}})
    with pytest.raises(ConfigError, match=r"replica 'r'.*missing\.pem"):
        build_adapter(POOL, replica)


def test_tls_settings_on_a_plain_http_engine_are_a_configuration_error() -> None:
    replica = ReplicaConfig.model_validate({"id": "r", "base_url": "http://e", "tls": {"verify": True}})
    with pytest.raises(ConfigError, match="not an https:// URL"):
        build_adapter(POOL, replica)


# -- proxies ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variable", ["HTTPS_PROXY", "https_proxy", "ALL_PROXY"])
def test_a_proxy_that_would_apply_to_an_engine_is_refused_naming_the_variable(variable: str) -> None:
    replica = ReplicaConfig.model_validate({"id": "r", "base_url": "https://engine.internal:8443"})
    with pytest.raises(ConfigError, match=f"{variable.upper()} is set.*NO_PROXY"):
        check_direct(replica, {variable: "http://proxy:3128"})
    with pytest.raises(ConfigError):  # a NO_PROXY entry for another host, or a mere suffix, does not exempt it
        check_direct(replica, {variable: "http://proxy:3128", "NO_PROXY": "other.internal,ngine.internal,10.0.0.0/8"})


@pytest.mark.parametrize(
    ("url", "environ"),
    [
        ("https://engine.internal", {"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": "engine.internal"}),
        ("https://a.engine.internal", {"HTTPS_PROXY": "http://proxy:3128", "no_proxy": ".engine.internal"}),
        ("http://10.1.2.3:8080", {"HTTP_PROXY": "http://proxy:3128", "NO_PROXY": "localhost,10.0.0.0/8"}),
        ("http://engine.internal:80", {"HTTP_PROXY": "http://proxy:3128", "NO_PROXY": "engine.internal:80"}),
        ("http://engine.internal", {"HTTP_PROXY": "http://proxy:3128", "NO_PROXY": "*"}),
        ("http://127.0.0.1:8080", {"HTTP_PROXY": "http://proxy:3128"}),
        ("http://localhost:8080", {"ALL_PROXY": "http://proxy:3128"}),
        ("http://engine.internal", {"HTTPS_PROXY": "http://proxy:3128"}),  # only http:// engines' variable counts
        ("https://engine.internal", {}),
    ],
)
def test_engines_outside_any_proxy_are_accepted(url: str, environ: dict[str, str]) -> None:
    check_direct(ReplicaConfig.model_validate({"id": "r", "base_url": url}), environ)


def test_startup_refuses_the_replica_when_a_proxy_applies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://proxy:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with pytest.raises(ConfigError, match="HTTP_PROXY"):
        build_adapter(POOL, ReplicaConfig.model_validate({"id": "r", "base_url": "http://engine.internal"}))


# -- per-host limits -------------------------------------------------------------------------------------------


async def test_a_host_at_its_connection_limit_does_not_starve_another_host() -> None:
    async def script(_: bytes) -> tuple[bytes | list[bytes] | None, bool]:
        return chunked(b"x"), False

    async with ScriptedServer(script) as busy_url, ScriptedServer(script) as other_url:
        async with httpx.AsyncClient(transport=EngineTransport(max_connections=1)) as http:
            async with http.stream("GET", busy_url + "/held"):  # the busy host's only connection, held
                with pytest.raises(httpx.PoolTimeout):
                    await http.get(busy_url + "/b", timeout=httpx.Timeout(None, pool=0.05))
                async with asyncio.timeout(10):
                    answered = await http.get(other_url + "/c", timeout=httpx.Timeout(None, pool=0.05))
                assert answered.content == b"x"
