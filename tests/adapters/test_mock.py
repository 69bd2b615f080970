from __future__ import annotations

import asyncio

import pytest
from llama_orch_gen.contracts.events import EndEvent, TokenEvent
from llama_orch_gen.contracts.task_request import TaskRequest

from llama_orch.adapters.base import HealthState, WorkerAdapter
from llama_orch.adapters.http_policy import HttpPolicy
from llama_orch.adapters.mock import Fault, FaultKind, MockAdapter, mock_text
from llama_orch.determinism import derive_seed
from tests.adapters.helpers import GUARD_S, run_task

FAST = HttpPolicy(first_token_s=0.3, inter_token_s=0.3, backoff_base_s=0.001, backoff_cap_s=0.002)


def task(task_id: str = "t-1", **kw: object) -> TaskRequest:
    return TaskRequest.model_validate({"task_id": task_id, "prompt": "Hello", **kw})


async def test_is_a_worker_adapter_with_deterministic_text() -> None:
    adapter = MockAdapter(tokens=8)
    assert isinstance(adapter, WorkerAdapter)
    first = await run_task(adapter, task(seed=7))
    again = await run_task(adapter, task("t-2", seed=7))
    other = await run_task(adapter, task(seed=8))
    assert first.text == again.text == "".join(mock_text("Hello", 7, 8))
    assert other.text != first.text
    assert first.code == "end:stop"
    end = first.terminal
    assert isinstance(end, EndEvent) and end.data.tokens_out == 8


async def test_missing_seed_is_derived_from_the_task_id() -> None:
    outcome = await run_task(MockAdapter(), task("abc"))
    started = outcome.events[0].root
    assert started.event == "started" and started.data.seed == derive_seed("abc")


async def test_max_tokens_limits_and_reports_length() -> None:
    outcome = await run_task(MockAdapter(tokens=16), task(max_tokens=3))
    assert outcome.code == "end:length"
    assert len([e for e in outcome.events if isinstance(e.root, TokenEvent)]) == 3


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        ("refuse", "POOL_UNAVAILABLE"),
        ("loading", "POOL_UNREADY"),
        ("overloaded", "ADMISSION_REJECT"),
        ("server_error", "WORKER_RESET"),
        ("bad_request", "INVALID_PARAMS"),
        ("auth", "UPSTREAM_AUTH"),
        ("stall_first", "DECODE_TIMEOUT"),
        ("stall_mid", "DECODE_TIMEOUT"),
        ("reset_mid", "WORKER_RESET"),
        ("malformed", "WORKER_RESET"),
        ("in_stream_error", "INTERNAL"),
        ("truncated", "WORKER_RESET"),
    ],
)
async def test_every_fault_ends_with_one_typed_error(kind: FaultKind, code: str) -> None:
    adapter = MockAdapter(faults=[Fault(kind, after_tokens=2)], policy=FAST)
    outcome = await run_task(adapter, task())
    assert outcome.code == code


async def test_retriable_refusal_is_retried_then_succeeds() -> None:
    adapter = MockAdapter(faults=[Fault("server_error", times=2)], policy=FAST)
    outcome = await run_task(adapter, task())
    assert outcome.code == "end:stop" and adapter.calls == 3


async def test_non_retriable_refusal_is_not_retried() -> None:
    adapter = MockAdapter(faults=[Fault("bad_request", times=1)], policy=FAST)
    outcome = await run_task(adapter, task())
    assert outcome.code == "INVALID_PARAMS" and adapter.calls == 1


async def test_retry_after_beyond_the_cap_is_reported_not_waited() -> None:
    adapter = MockAdapter(faults=[Fault("overloaded", retry_after_ms=60_000)], policy=FAST)
    outcome = await run_task(adapter, task())
    error = outcome.terminal
    assert error.event == "error" and error.data.retry_after_ms == 60_000 and error.data.retriable
    assert adapter.calls == 1


async def test_cancel_ends_with_canceled_and_no_token_after() -> None:
    adapter = MockAdapter(tokens=1000, token_delay_s=0.01)
    events = []
    async with asyncio.timeout(GUARD_S):
        async for event in adapter.submit(task("c-1")):
            events.append(event)
            if len(events) == 3:
                assert await adapter.cancel("c-1")
    assert [e.root.event for e in events] == ["started", "token", "token", "end"]
    end = events[-1].root
    assert isinstance(end, EndEvent) and end.data.finish_reason == "canceled"
    assert not await adapter.cancel("c-1")
    assert (await adapter.props()).slots_free == adapter.slots


async def test_cancel_from_another_task_interrupts_a_stall() -> None:
    adapter = MockAdapter(faults=[Fault("stall_mid", after_tokens=1)])

    async def consume() -> list[str]:
        return [e.root.event async for e in adapter.submit(task("c-2"))]

    runner = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    assert await adapter.cancel("c-2")
    async with asyncio.timeout(GUARD_S):
        kinds = await runner
    assert kinds == ["started", "token", "end"]


async def test_consumer_abandoning_the_stream_releases_the_slot() -> None:
    adapter = MockAdapter(tokens=100)
    stream = adapter.submit(task())
    async for _ in stream:
        break
    await stream.aclose()  # type: ignore[attr-defined]
    assert (await adapter.props()).slots_free == adapter.slots


async def test_health_reflects_faults() -> None:
    assert (await MockAdapter().health()).state is HealthState.HEALTHY
    assert (await MockAdapter(faults=[Fault("loading")]).health()).state is HealthState.UNHEALTHY


async def test_deadline_passed_is_deadline_unmet() -> None:
    adapter = MockAdapter(faults=[Fault("stall_mid", after_tokens=1)], policy=FAST.__class__(inter_token_s=60))
    outcome = await run_task(adapter, task(deadline_ms=100))
    assert outcome.code == "DEADLINE_UNMET"
    assert (await run_task(adapter, task(deadline_ms=0))).code == "DEADLINE_UNMET"
