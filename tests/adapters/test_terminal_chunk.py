"""A generation ends at its terminal chunk: `end` comes as soon as the engine's final chunk is decoded, even when
the engine keeps the body open. The rest of the body is read after `end`, within a bound, only to reuse the
connection; a connection that does not finish cleanly is closed and never reused."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from llama_orch_gen.contracts.task_request import TaskRequest

from llama_orch.adapters.http_policy import HttpPolicy
from llama_orch.adapters.llamacpp import LlamaCppAdapter
from tests.engines.spec_support import engines_reference_dir
from tests.support.scripted_server import Script, ScriptedServer

GUARD_S = 20.0  # far below the inter-token timeout below: only ending at the final chunk gets under it


def _chunk(payload: dict[str, object]) -> bytes:
    data = b"data: " + json.dumps(payload).encode() + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


def _stream(tokens: list[str]) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    parts = [
        _chunk(
            {
                "index": 0,
                "content": t,
                "tokens": [i],
                "stop": False,
                "id_slot": 0,
                "tokens_predicted": i + 1,
                "tokens_evaluated": 2,
            }
        )
        for i, t in enumerate(tokens)
    ]
    final = {
        "index": 0,
        "content": "",
        "tokens": [],
        "stop": True,
        "id_slot": 0,
        "tokens_predicted": len(tokens),
        "tokens_evaluated": 2,
        "stop_type": "eos",
        "stopping_word": "",
    }
    return head + b"".join(parts) + _chunk(final)


async def _until_idle(adapter: LlamaCppAdapter) -> None:
    """The drained connection is back in the pool (draining happens after `end`, in the background)."""
    transport = adapter.http._transport
    async with asyncio.timeout(GUARD_S):
        while not any(getattr(transport, "_idle", {}).values()):
            await asyncio.sleep(0.005)


def _engine(stream: Callable[[], bytes | list[bytes]]) -> Script:
    """llama-server: its recorded `/props` answer, and `stream()` for every completion."""
    props = (engines_reference_dir() / "llamacpp-transcripts" / "props.body").read_bytes()

    async def script(request: bytes) -> tuple[bytes | list[bytes] | None, bool]:
        if request.startswith(b"GET /props"):
            head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(props)
            return head + props, False
        return stream(), False

    return script


def _adapter(url: str) -> LlamaCppAdapter:
    policy = HttpPolicy(first_token_s=600.0, inter_token_s=600.0)
    return LlamaCppAdapter("p", "r0", base_url=url, api="native", policy=policy)


async def _events(adapter: LlamaCppAdapter, prompt: str) -> list[str]:
    async with asyncio.timeout(GUARD_S):
        events = [event.root.event async for event in adapter.submit(TaskRequest(prompt=prompt, task_id=prompt))]
    return [kind for kind in events if kind != "metrics"]  # engine numbers (tested elsewhere) are not the point


async def test_final_chunk_ends_the_task_while_the_engine_holds_the_body_open() -> None:
    # No closing zero-size chunk: the body stays open.
    server = ScriptedServer(_engine(lambda: _stream([" a", " b"])))
    async with server as url:
        adapter = _adapter(url)
        events = await _events(adapter, "held")
        assert events == ["started", "token", "token", "end"], events
        # The held connection cannot be reused: the next task opens a new one, and also ends.
        assert await _events(adapter, "next") == ["started", "token", "token", "end"]
        assert server.connections == 2
        await adapter.aclose()


async def test_a_body_that_finishes_after_the_final_chunk_keeps_its_connection() -> None:
    # The body's end arrives in a later read.
    server = ScriptedServer(_engine(lambda: [_stream([" a"]), b"0\r\n\r\n"]))
    async with server as url:
        adapter = _adapter(url)
        for n in range(3):
            assert (await _events(adapter, f"t{n}"))[-1] == "end"
            await _until_idle(adapter)
        assert server.connections == 1  # drained after `end`, then reused
        await adapter.aclose()
