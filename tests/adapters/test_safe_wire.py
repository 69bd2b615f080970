"""The engine wire is safe: header names and values are checked before anything is written (a token holding CR, LF
or NUL is a configuration error naming its variable), and interim 1xx responses are skipped on every connection."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from llama_orch_gen.contracts.config import OrchestratorConfig
from llama_orch_gen.contracts.task_request import TaskRequest

from llama_orch.adapters.factory import build_registry
from llama_orch.adapters.http_transport import EngineTransport
from llama_orch.adapters.llamacpp import LlamaCppAdapter
from llama_orch.errors import ConfigError
from tests.adapters.helpers import run_task
from tests.adapters.wire_fakes import LLAMACPP, TOKENS
from tests.support.scripted_server import ScriptedServer, chunked

BAD_VALUES = ["k\r\nX-Injected: 1", "k\nX-Injected: 1", "k\rX", "k\x00"]
BAD_TOKENS = ["k\r\nX-Injected: 1", "k\nX-Injected: 1", "k\rX", "k\x7f"]  # an environment cannot hold NUL


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=EngineTransport()) as client:
        yield client


@pytest.mark.parametrize("value", BAD_TOKENS)
def test_an_engine_token_with_a_line_break_is_a_configuration_error_naming_its_variable(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENGINE_TOKEN_UNDER_TEST", value)
    replica = {"id": "r0", "base_url": "http://127.0.0.1:9", "bearer_token_env": "ENGINE_TOKEN_UNDER_TEST"}
    config = OrchestratorConfig.model_validate({"pools": [{"id": "p", "engine": "vllm", "replicas": [replica]}]})
    with pytest.raises(ConfigError, match="ENGINE_TOKEN_UNDER_TEST") as caught:
        build_registry(config)
    assert value not in str(caught.value)  # the secret itself is never echoed


@pytest.mark.parametrize("value", BAD_VALUES)
async def test_a_header_value_with_cr_lf_or_nul_is_refused_before_anything_is_sent(
    value: str, http: httpx.AsyncClient
) -> None:
    server = ScriptedServer(_ok)
    async with server as url:
        with pytest.raises(httpx.LocalProtocolError, match="(?i)x-custom"):
            await http.get(url + "/", headers={"X-Custom": value})
    assert server.requests == []


@pytest.mark.parametrize("name", ["X Bad", "X:Bad", "X\r\nBad", ""])
async def test_a_header_name_that_is_not_a_token_is_refused(name: str, http: httpx.AsyncClient) -> None:
    server = ScriptedServer(_ok)
    async with server as url:
        request = http.build_request("GET", url + "/")
        request.headers[name] = "v"
        with pytest.raises(httpx.LocalProtocolError):
            await http.send(request)
    assert server.requests == []


INTERIM = [
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n",
]


@pytest.mark.parametrize("split", [False, True], ids=["one-read", "own-read"])
@pytest.mark.parametrize("interim", INTERIM, ids=["100", "103", "100+102"])
async def test_interim_responses_are_skipped_and_the_connection_stays_in_step(
    interim: bytes, split: bool, http: httpx.AsyncClient
) -> None:
    final = chunked(b"data: 1\n\n", b"data: 2\n\n")

    async def script(_: bytes) -> tuple[bytes | list[bytes] | None, bool]:
        return ([interim, final] if split else interim + final), False

    server = ScriptedServer(script)
    async with server as url:
        for _ in range(5):
            async with http.stream("POST", url + "/completion", json={}) as response:
                body = b"".join([part async for part in response.aiter_bytes()])
            assert response.status_code == 200
            assert body == b"data: 1\n\ndata: 2\n\n"
            assert "link" not in response.headers  # the interim response's headers are not the response's
    assert server.connections == 1


async def test_a_switching_protocols_answer_is_a_protocol_error(http: httpx.AsyncClient) -> None:
    async def script(_: bytes) -> tuple[bytes | list[bytes] | None, bool]:
        return b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n", False

    async with ScriptedServer(script) as url:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(url + "/")


async def _ok(_: bytes) -> tuple[bytes | list[bytes] | None, bool]:
    return chunked(b"{}"), False


async def test_five_of_five_llamacpp_tasks_complete_behind_100_continue() -> None:
    props = json.dumps({"build_info": "b1", "model_path": "m.gguf", "total_slots": 1}).encode()
    stream = b"".join(LLAMACPP.token(i, t) for i, t in enumerate(TOKENS)) + LLAMACPP.final(len(TOKENS))

    async def script(request: bytes) -> tuple[bytes | list[bytes] | None, bool]:
        body = props if request.startswith(b"GET /props") else stream
        return [b"HTTP/1.1 100 Continue\r\n\r\n", chunked(body)], False

    server = ScriptedServer(script)
    async with server as url:
        adapter = LlamaCppAdapter("p", "r0", api="native", base_url=url)
        try:
            for n in range(5):
                outcome = await run_task(adapter, TaskRequest(task_id=f"t-{n}", prompt="Hi", max_tokens=16))
                assert outcome.code == "end:stop" and outcome.text == "".join(TOKENS)
        finally:
            await adapter.aclose()
    assert server.connections == 1
