"""Every engine adapter against its simulator over a real socket: a normal stream, and each fault ending in its
one terminal event. The codes come from the fault matrix over wire fakes (tests/adapters/test_fault_matrix.py);
here the same faults come from a real server, so resets, stalls and refusals are real transport events."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from llama_orch_gen.contracts.events import EndEvent, ErrorEvent

from llama_orch.adapters.http_adapter import HttpAdapter
from llama_orch.adapters.http_policy import HttpPolicy
from llama_orch.adapters.llamacpp import LlamaCppAdapter
from llama_orch.adapters.tgi import TgiAdapter
from llama_orch.adapters.triton import TritonAdapter
from llama_orch.adapters.vllm import VllmAdapter
from llama_orch.simulators import ENGINES, Fault, FaultKind, SimulatorConfig, generate
from llama_orch.simulators.__main__ import refusing_socket
from tests.adapters.helpers import run_task
from tests.adapters.test_fault_matrix import EXCEPTIONS, FAST, FAULTS, task
from tests.support.asgi_server import serve_asgi

TOKENS = 6
STALL_S = 30.0  # ended early: the adapter gives up after FAST's 0.3 s and closes the connection
Make = Callable[[str], HttpAdapter]
ADAPTERS: dict[str, Make] = {
    "llamacpp": lambda url: LlamaCppAdapter("p", "r0", api="native", base_url=url, policy=FAST),
    "llamacpp-openai": lambda url: LlamaCppAdapter("p", "r0", api="openai", base_url=url, policy=FAST),
    "vllm": lambda url: VllmAdapter("p", "r0", model="sim-model", base_url=url, policy=FAST),
    "tgi": lambda url: TgiAdapter("p", "r0", base_url=url, policy=FAST),
    "triton": lambda url: TritonAdapter("p", "r0", model="ensemble", base_url=url, policy=FAST),
}

# Simulator fault → the fault matrix's name for it (its expected code).
MATRIX_NAME = {
    Fault(FaultKind.LOADING): "loading",
    Fault(FaultKind.OVERLOADED, retry_after_s=2): "429",
    Fault(FaultKind.SERVER_ERROR, times=2): "5xx_then_success",
    Fault(FaultKind.STALL_FIRST): "stall_before_first_token",
    Fault(FaultKind.STALL_MID): "stall_mid_stream",
    Fault(FaultKind.RESET_MID): "reset_mid_stream",
    Fault(FaultKind.MALFORMED): "malformed_chunk",
    Fault(FaultKind.IN_STREAM_ERROR): "in_stream_error",
    Fault(FaultKind.TRUNCATED): "missing_terminal_chunk",
}
# TGI answers overload and generation failures inside the stream under 200 (FACTS.md §3.3; our spec), never as
# a status on /generate_stream: so no Retry-After and no retry. The wire fakes send statuses instead.
TGI_IN_STREAM = {"loading": "INTERNAL", "429": "ADMISSION_REJECT", "5xx_then_success": "INTERNAL"}


def engine_of(adapter: str) -> str:
    return adapter.split("-")[0]


def expected(adapter: str, name: str) -> str:
    engine = engine_of(adapter)
    if engine == "tgi" and name in TGI_IN_STREAM:
        return TGI_IN_STREAM[name]
    return EXCEPTIONS.get((engine, name), FAULTS[name][1])


@pytest.mark.parametrize("adapter", list(ADAPTERS))
async def test_normal_stream(adapter: str) -> None:
    config = SimulatorConfig(tokens=TOKENS)
    with serve_asgi(ENGINES[engine_of(adapter)](config)) as url:
        engine = ADAPTERS[adapter](url)
        outcome = await run_task(engine, task())
        await engine.aclose()
    request = task()
    generation = generate(config, request.prompt or "", request.seed or _seed(request), request.max_tokens)
    assert len(set(generation.tokens)) == TOKENS
    assert outcome.text == generation.text
    end = outcome.terminal
    assert isinstance(end, EndEvent) and end.data.finish_reason == "stop"
    # TGI counts its end-of-sequence token among the generated ones.
    assert end.data.tokens_out == TOKENS + (engine_of(adapter) == "tgi")


def _seed(request: object) -> int:
    from llama_orch_gen.contracts.task_request import TaskRequest

    from llama_orch.determinism import effective_seed

    assert isinstance(request, TaskRequest)
    return effective_seed(request)


@pytest.mark.parametrize("fault", list(MATRIX_NAME), ids=lambda f: MATRIX_NAME[f])
@pytest.mark.parametrize("adapter", list(ADAPTERS))
async def test_fault(adapter: str, fault: Fault) -> None:
    name = MATRIX_NAME[fault]
    config = SimulatorConfig(tokens=TOKENS, faults=(fault,), stall_s=STALL_S)
    with serve_asgi(ENGINES[engine_of(adapter)](config)) as url:
        engine = ADAPTERS[adapter](url)
        outcome = await run_task(engine, task())
        await engine.aclose()
    assert outcome.code == expected(adapter, name)
    terminal = outcome.terminal
    if isinstance(terminal, ErrorEvent):
        assert terminal.data.engine == engine_of(adapter)
    if name == "429" and engine_of(adapter) != "tgi":
        assert terminal.data.retry_after_ms == 2000  # type: ignore[union-attr]


@pytest.mark.parametrize("adapter", list(ADAPTERS))
async def test_refused_connection(adapter: str) -> None:
    with refusing_socket() as url:
        engine = ADAPTERS[adapter](url)
        outcome = await run_task(engine, task())
        await engine.aclose()
    assert outcome.code == FAULTS["refused"][1]


def test_policy_is_the_fault_matrix_one() -> None:
    assert isinstance(FAST, HttpPolicy) and FAST.first_token_s < STALL_S
