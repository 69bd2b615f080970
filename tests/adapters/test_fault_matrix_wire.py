"""The faults that live on the wire itself, against every engine adapter over the real transport and a real
socket (the fault matrix's fakes have no bytes to get wrong): interim 1xx answers, a body held open after the
final chunk, and a token that would inject a header line."""

from __future__ import annotations

import pytest
from llama_orch_gen.contracts.config import PoolConfig, ReplicaConfig
from llama_orch_gen.contracts.task_request import TaskRequest

from llama_orch.adapters.factory import build_adapter
from llama_orch.adapters.http_policy import HttpPolicy
from llama_orch.errors import ConfigError
from tests.adapters.helpers import run_task
from tests.adapters.wire_fakes import DIALECTS, TOKENS, Dialect
from tests.support.scripted_server import ScriptedServer

INTERIM = b"HTTP/1.1 100 Continue\r\n\r\n"
CHUNKED = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def engine(dialect: Dialect, *, interim: bool = False, hold_after_final: bool = False) -> ScriptedServer:
    control = {**dialect.control, "/v1/models": (404, b'{"error":"not found"}')}

    async def script(request: bytes) -> tuple[bytes | list[bytes] | None, bool]:
        path = request.split(b" ", 2)[1].split(b"?")[0].decode()
        before = [INTERIM] if interim else []
        if path == dialect.stream_path:
            events = b"".join(dialect.token(i, t) for i, t in enumerate(TOKENS)) + dialect.final(len(TOKENS))
            if hold_after_final:  # no chunked terminator: the server then waits on the open connection
                return [*before, CHUNKED + _chunk(events)], False
            return [*before, CHUNKED + _chunk(events) + b"0\r\n\r\n"], False
        status, body = control.get(path, (404, b'{"error":"not found"}'))
        head = b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % (status, len(body))
        return [*before, head + body], False

    return ScriptedServer(script, pause_s=0.01)


def task(n: int) -> TaskRequest:
    return TaskRequest(task_id=f"t-{n}", prompt="Hello", max_tokens=64)


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.engine)
async def test_five_of_five_tasks_complete_behind_interim_100_continue(dialect: Dialect) -> None:
    server = engine(dialect, interim=True)
    async with server as url:
        adapter = dialect.make(base_url=url, policy=HttpPolicy())
        try:
            for n in range(5):
                outcome = await run_task(adapter, task(n))
                assert outcome.code == "end:stop" and outcome.text == "".join(TOKENS), outcome.events[-1]
        finally:
            await adapter.aclose()
    assert server.connections == 1  # every interim answer was read past: the connection stayed in step


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.engine)
async def test_a_body_held_open_after_the_final_chunk(dialect: Dialect) -> None:
    server = engine(dialect, hold_after_final=True)
    async with server as url:
        # Timeouts far beyond the test's guard, but Triton's: without an end marker it can only time out.
        inter_token_s = 0.3 if dialect.engine == "triton" else 3600.0
        adapter = dialect.make(base_url=url, policy=HttpPolicy(inter_token_s=inter_token_s, first_token_s=3600.0))
        try:
            outcome = await run_task(adapter, task(0))
        finally:
            await adapter.aclose()
    assert outcome.text == "".join(TOKENS)
    assert outcome.code == ("DECODE_TIMEOUT" if dialect.engine == "triton" else "end:stop"), outcome.events[-1]


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.engine)
def test_a_token_that_would_inject_a_header_line_stops_the_replica_at_startup(
    dialect: Dialect, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENGINE_TOKEN_UNDER_TEST", "k\r\nX-Injected: 1")
    replica = ReplicaConfig.model_validate(
        {"id": "r", "base_url": "http://127.0.0.1:9", "bearer_token_env": "ENGINE_TOKEN_UNDER_TEST"}
    )
    pool = PoolConfig.model_validate(
        {"id": "p", "engine": dialect.engine, "model": "ensemble", "replicas": [replica.model_dump(exclude_none=True)]}
    )
    with pytest.raises(ConfigError, match="ENGINE_TOKEN_UNDER_TEST") as refused:
        build_adapter(pool, replica)
    assert "X-Injected" not in str(refused.value)
