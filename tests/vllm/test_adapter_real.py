"""The vLLM adapter against a real vLLM (CPU build, tiny local model), side by side with direct calls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from llama_orch_gen.contracts.config import PoolConfig
from llama_orch_gen.contracts.events import EndEvent, ErrorEvent, TokenEvent
from llama_orch_gen.contracts.task_request import TaskRequest

from llama_orch.adapters.base import HealthState
from llama_orch.adapters.factory import build_adapter
from llama_orch.adapters.vllm import VllmAdapter
from tests.adapters.helpers import GUARD_S, check_invariants, run_task
from tests.support.polling import wait_for
from tests.support.vllm_server import VllmServer
from tests.vllm.direct import complete, metric, sampling

pytestmark = pytest.mark.real_vllm

PROMPTS = ("Orchestrators route", "Once upon a time", "Café ☕ and 日本", "The quick brown")


def make_adapter(server: VllmServer, model: str | None = None) -> VllmAdapter:
    pool = PoolConfig.model_validate(
        {
            "id": "vllm",
            "engine": "vllm",
            "model": model or server.served_name,
            "replicas": [{"id": "r0", "base_url": server.base_url}],
        }
    )
    built = build_adapter(pool, pool.replicas[0])
    assert isinstance(built, VllmAdapter)
    return built


@pytest.fixture
async def vllm(vllm_server: VllmServer) -> AsyncIterator[VllmAdapter]:
    adapter = make_adapter(vllm_server)
    yield adapter
    await adapter.aclose()


@pytest.mark.parametrize("prompt", PROMPTS)
async def test_greedy_text_and_usage_equal_direct(vllm: VllmAdapter, vllm_server: VllmServer, prompt: str) -> None:
    outcome = await run_task(vllm, TaskRequest(task_id="g", prompt=prompt, max_tokens=24, temperature=0.0))
    text, usage = complete(vllm_server, prompt, 24, **sampling(None, 0.0))
    end = outcome.terminal
    assert isinstance(end, EndEvent)
    assert outcome.text == text
    assert (end.data.tokens_in, end.data.tokens_out) == (usage["prompt_tokens"], usage["completion_tokens"])


async def test_sixteen_seeds_are_byte_identical_twice_and_at_concurrency_8(
    vllm: VllmAdapter, vllm_server: VllmServer
) -> None:
    seeds = list(range(101, 117))

    def task(seed: int, run: str) -> TaskRequest:
        return TaskRequest(
            task_id=f"s{seed}-{run}", prompt="Counting: one two", max_tokens=16, seed=seed, temperature=0.9
        )

    first = [(await run_task(vllm, task(s, "a"))).text for s in seeds]
    second = [(await run_task(vllm, task(s, "b"))).text for s in seeds]
    limit = asyncio.Semaphore(8)

    async def bounded(seed: int) -> str:
        async with limit:
            return (await run_task(vllm, task(seed, "c"))).text

    concurrent = await asyncio.gather(*(bounded(s) for s in seeds))
    direct = [complete(vllm_server, "Counting: one two", 16, **sampling(s, 0.9))[0] for s in seeds]
    assert [t.encode() for t in first] == [t.encode() for t in second] == [t.encode() for t in concurrent]
    assert first == direct
    assert len(set(first)) > 1, "different seeds gave one text: the seed is not reaching the engine"


async def test_started_carries_the_version_vllm_reports(vllm: VllmAdapter, vllm_server: VllmServer) -> None:
    outcome = await run_task(vllm, TaskRequest(task_id="v", prompt="Hi", max_tokens=2))
    started = outcome.events[0].root
    assert started.event == "started"
    assert started.data.engine_version == httpx.get(f"{vllm_server.base_url}/version").json()["version"]
    health, props = await vllm.health(), await vllm.props()
    assert health.state is HealthState.HEALTHY and health.ready
    assert props.model == vllm_server.served_name and props.ctx_size == vllm_server.max_model_len


async def test_cancel_aborts_the_engine_request_within_a_second(vllm: VllmAdapter, vllm_server: VllmServer) -> None:
    # vLLM does not count client aborts in request_success_total, and its running gauge lags a fast engine; its
    # generated-token counter shows the request stopped far short of its 8000 tokens and generates nothing more.
    generated = metric(vllm_server, "vllm:generation_tokens_total")
    task = TaskRequest(task_id="c", prompt="Once upon a time", max_tokens=8000, temperature=0.0)  # greedy: no EOS
    stream = vllm.submit(task)
    async with asyncio.timeout(GUARD_S):
        async for event in stream:
            if isinstance(event.root, TokenEvent):  # at once: the tiny model makes 8000 tokens in about 2 s
                assert await vllm.cancel("c")
                break
        await stream.aclose()  # type: ignore[attr-defined]
    assert wait_for(lambda: metric(vllm_server, "vllm:num_requests_running") == 0, 1.0), "still running after 1 s"
    stopped_at = metric(vllm_server, "vllm:generation_tokens_total")
    time.sleep(1.0)
    assert metric(vllm_server, "vllm:generation_tokens_total") == stopped_at, "still generating after the cancel"
    assert stopped_at - generated < 8000, "the request ran to its end: the cancel never reached vLLM"


async def test_over_long_request_is_invalid_params_before_any_token(vllm: VllmAdapter) -> None:
    outcome = await run_task(vllm, TaskRequest(task_id="o", prompt="Hi", max_tokens=9000))
    assert outcome.code == "INVALID_PARAMS"
    assert [e.root.event for e in outcome.events] in (["error"], ["started", "error"])
    assert "max" in outcome.terminal.data.message.lower()


async def test_unknown_model_is_refused_as_model_not_served(vllm_server: VllmServer) -> None:
    adapter = make_adapter(vllm_server, model="no-such-model")
    try:
        outcome = await run_task(adapter, TaskRequest(task_id="m", prompt="Hi", max_tokens=2))
    finally:
        await adapter.aclose()
    terminal = outcome.terminal
    assert isinstance(terminal, ErrorEvent)
    assert terminal.data.code == "MODEL_NOT_SERVED" and "no-such-model" in terminal.data.message
    check_invariants(outcome.events)
