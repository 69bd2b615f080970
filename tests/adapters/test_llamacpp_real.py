"""The llama.cpp adapter against a real llama-server with a tiny real model."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import httpx
import pytest
from llama_orch_gen.contracts.config import PoolConfig
from llama_orch_gen.contracts.events import EndEvent, ErrorEvent
from llama_orch_gen.contracts.task_request import TaskRequest

from llama_orch.adapters.base import HealthState
from llama_orch.adapters.factory import build_adapter
from llama_orch.adapters.llamacpp import LlamaCppAdapter
from tests.adapters.helpers import GUARD_S, check_invariants, run_task
from tests.support.llama_server import LlamaServer, start_llama_server

pytestmark = pytest.mark.real_engine


def adapter(server: LlamaServer, api: str = "auto", **replica: object) -> LlamaCppAdapter:
    pool = PoolConfig.model_validate(
        {
            "id": "llama",
            "engine": "llamacpp",
            "replicas": [{"id": "r0", "base_url": server.base_url, "api": api, **replica}],
        }
    )
    built = build_adapter(pool, pool.replicas[0])
    assert isinstance(built, LlamaCppAdapter)
    return built


@pytest.mark.parametrize("api", ["native", "openai", "auto"])
async def test_stream_is_real_deterministic_and_versioned(
    llama_server: LlamaServer, tiny_model: Path, api: str
) -> None:
    llama = adapter(llama_server, api, model_path=str(tiny_model))
    try:
        request = TaskRequest(task_id="real-1", prompt="Hello world", max_tokens=12, seed=42)
        first = await run_task(llama, request)
        second = await run_task(llama, request.model_copy(update={"task_id": "real-2"}))
        props = httpx.get(f"{llama_server.base_url}/props").json()
    finally:
        await llama.aclose()
    assert first.text and first.text == second.text
    end = first.terminal
    assert isinstance(end, EndEvent)
    assert end.data.finish_reason == "length" and end.data.tokens_out == 12 and end.data.tokens_in
    started = first.events[0].root
    assert started.event == "started"
    assert started.data.engine_version == props["build_info"] and started.data.seed == 42
    assert started.data.model_digest == "sha256:" + hashlib.sha256(tiny_model.read_bytes()).hexdigest()


async def test_native_and_openai_surfaces_agree(llama_server: LlamaServer) -> None:
    texts = []
    for api in ("native", "openai"):
        llama = adapter(llama_server, api)
        texts.append(
            (await run_task(llama, TaskRequest(task_id=f"x-{api}", prompt="The sky", max_tokens=8, seed=7))).text
        )
        await llama.aclose()
    assert texts[0] == texts[1]


async def test_health_props_and_version(llama_server: LlamaServer) -> None:
    llama = adapter(llama_server)
    try:
        health = await llama.health()
        props = await llama.props()
        version = await llama.engine_version()
    finally:
        await llama.aclose()
    assert health.state is HealthState.HEALTHY and health.live and health.ready
    assert props.slots_total == 2 and props.slots_free == 2 and props.ctx_size
    assert version.engine == "llamacpp" and version.version


async def test_context_overflow_is_invalid_params(llama_server: LlamaServer) -> None:
    llama = adapter(llama_server, "native")
    outcome = await run_task(llama, TaskRequest(task_id="big", prompt="word " * 2000, max_tokens=4))
    await llama.aclose()
    assert outcome.code == "INVALID_PARAMS"
    assert not outcome.terminal.data.retriable  # type: ignore[union-attr]


async def test_wrong_key_is_upstream_auth_and_never_leaks(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with start_llama_server(tiny_model, api_key="the-real-key-123", parallel=1) as server:
        monkeypatch.setenv("LLAMA_KEY", "wrong-key-456789")
        wrong = adapter(server, "auto", bearer_token_env="LLAMA_KEY")
        outcome = await run_task(wrong, TaskRequest(task_id="auth", prompt="hi", max_tokens=4))
        health = await wrong.health()
        await wrong.aclose()
        monkeypatch.setenv("LLAMA_KEY", "the-real-key-123")
        right = adapter(server, "auto", bearer_token_env="LLAMA_KEY")
        ok = await run_task(right, TaskRequest(task_id="auth-ok", prompt="hi", max_tokens=4))
        await right.aclose()
    assert outcome.code == "UPSTREAM_AUTH"
    error = outcome.terminal
    assert isinstance(error, ErrorEvent) and "wrong-key-456789" not in error.data.message
    assert health.state is HealthState.UNHEALTHY and health.detail and "wrong-key" not in health.detail
    assert ok.code == "end:length"


@pytest.mark.parametrize("how", ["cancel", "abandon"])
async def test_cancel_frees_the_slot_within_a_second(tiny_model: Path, how: str) -> None:
    # One big slot, so an uncanceled generation would run for many seconds.
    with start_llama_server(tiny_model, ctx_size=8192, parallel=1) as server:
        llama = adapter(server, "native")
        events = []
        stream = llama.submit(TaskRequest(task_id="long", prompt="Once upon a time", max_tokens=8000))
        async with asyncio.timeout(GUARD_S):
            async for event in stream:
                events.append(event)
                if len(events) == 6:
                    if how == "abandon":
                        break
                    assert await llama.cancel("long")
            await stream.aclose()  # type: ignore[attr-defined]
            canceled_at = asyncio.get_running_loop().time()
            async with httpx.AsyncClient(base_url=server.base_url) as client:
                while any(slot["is_processing"] for slot in (await client.get("/slots")).json()):
                    await asyncio.sleep(0.02)
            freed_after = asyncio.get_running_loop().time() - canceled_at
        await llama.aclose()
    if how == "cancel":
        check_invariants(events)
        assert events[-1].root.event == "end" and events[-1].root.data.finish_reason == "canceled"  # type: ignore[union-attr]
        # The 5th token's engine read may have carried more tokens: those are delivered, nothing read after.
        assert 5 <= [e.root.event for e in events].count("token") < 8000
    assert freed_after < 1.0, f"slot still busy {freed_after:.2f}s after cancel"
