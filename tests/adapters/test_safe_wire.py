"""The engine wire beyond tests/adapters/test_http_transport.py: header names must be tokens, a 101 answer is a
protocol error, and a whole adapter keeps its connection in step behind interim `100 Continue` responses."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from llama_orch_gen.contracts.task_request import TaskRequest

from llama_orch.adapters.http_policy import error_for_exception
from llama_orch.adapters.http_transport import EngineTransport
from llama_orch.adapters.llamacpp import LlamaCppAdapter
from tests.adapters.helpers import run_task
from tests.adapters.wire_fakes import LLAMACPP, TOKENS
from tests.support.scripted_server import ScriptedServer, chunked


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=EngineTransport()) as client:
        yield client


@pytest.mark.parametrize("name", ["X Bad", "X:Bad", "X\r\nBad", ""])
async def test_a_header_name_that_is_not_a_token_is_refused(name: str, http: httpx.AsyncClient) -> None:
    server = ScriptedServer(_ok)
    async with server as url:
        request = http.build_request("GET", url + "/")
        request.headers[name] = "v"
        with pytest.raises(httpx.LocalProtocolError):
            await http.send(request)
    assert server.requests == []


async def test_a_switching_protocols_answer_is_a_protocol_error(http: httpx.AsyncClient) -> None:
    async def script(_: bytes) -> tuple[bytes | list[bytes] | None, bool]:
        return b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n", False

    async with ScriptedServer(script) as url:
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get(url + "/")


async def test_bytes_after_the_end_of_a_response_cost_the_connection(http: httpx.AsyncClient) -> None:
    async def script(_: bytes) -> tuple[bytes | list[bytes] | None, bool]:
        return chunked(b"{}") + chunked(b"unsolicited"), False  # a second answer nobody asked for

    server = ScriptedServer(script)
    async with server as url:
        for _ in range(2):
            assert (await http.get(url + "/")).content == b"{}"
    assert server.connections == 2  # the out-of-step connection was not reused


def test_a_request_refused_before_sending_is_internal_and_not_retried() -> None:
    error = error_for_exception(httpx.LocalProtocolError("header 'x' holds CR, LF or NUL: not sent"))
    assert error.code == "INTERNAL" and not error.retriable


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
