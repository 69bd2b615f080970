"""Exactly one terminal event, whatever races: a second cancel, a cancel racing the final chunk, and an exception
in an accounting callback never lose the terminal event or add a second one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from llama_orch_gen.contracts.task_request import TaskRequest

from llama_orch.adapters.mock import MockAdapter
from tests.service.helpers import TERMINAL, check_order, read_stream, service, submit, wait_until


async def _events(adapter: MockAdapter, task: TaskRequest, cancel_after: int, cancels: int) -> list[str]:
    seen: list[str] = []
    async with asyncio.timeout(30):
        async for event in adapter.submit(task):
            seen.append(event.root.event)
            if seen.count("token") == cancel_after:
                for _ in range(cancels):
                    await adapter.cancel(task.task_id or "")
    return seen


@pytest.mark.parametrize("cancels", [1, 2, 3])
async def test_repeated_cancel_ends_once(cancels: int) -> None:
    adapter = MockAdapter(tokens=50, token_delay_s=0.01)
    seen = await _events(adapter, TaskRequest(prompt="x", task_id="t", max_tokens=50), 2, cancels)
    assert seen[-1] == "end" and sum(kind in TERMINAL for kind in seen) == 1, seen
    assert seen.count("token") < 50


@pytest.mark.parametrize("cancels", [2, 3])
async def test_repeated_cancel_from_elsewhere_while_the_engine_is_awaited_ends_once(cancels: int) -> None:
    """Cancels from another task (the HTTP cancel route) land while the relay awaits the engine's next read."""
    adapter = MockAdapter(tokens=50, token_delay_s=0.05)
    seen: list[str] = []

    async def consume() -> None:
        async for event in adapter.submit(TaskRequest(prompt="x", task_id="t", max_tokens=50)):
            seen.append(event.root.event)

    async with asyncio.timeout(30):
        consumer = asyncio.get_running_loop().create_task(consume())
        while seen.count("token") < 2:
            await asyncio.sleep(0.001)
        await asyncio.sleep(0.01)  # inside the next token's wait
        for _ in range(cancels):
            assert await adapter.cancel("t")
        await consumer
    assert seen[-1] == "end" and sum(kind in TERMINAL for kind in seen) == 1, seen


@pytest.mark.parametrize("at", [4, 5])  # the last token, and the final chunk itself
async def test_cancel_racing_the_final_chunk_ends_once(at: int) -> None:
    adapter = MockAdapter(tokens=5)
    seen = await _events(adapter, TaskRequest(prompt="x", task_id="t", max_tokens=5), at, 2)
    assert sum(kind in TERMINAL for kind in seen) == 1 and seen[-1] == "end", seen


def test_a_failing_accounting_callback_never_strands_the_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    svc = service(sse_heartbeat_ms=600_000)  # a stranded reader must time out, not be kept alive
    original = svc.orch._on_event

    def broken(run: Any, replica: Any, event: Any) -> None:
        original(run, replica, event)
        raise RuntimeError("a bug in accounting")

    monkeypatch.setattr(svc.orch, "_on_event", broken)
    for pool in svc.orch.pools.values():
        monkeypatch.setattr(pool, "on_event", broken)
    with svc.running() as http:
        for _ in range(3):
            frames = read_stream(http, submit(http, {"prompt": "x", "max_tokens": 3})["task_id"])
            assert check_order(frames).event in TERMINAL
        wait_until(lambda: all(r.inflight == 0 for p in svc.orch.pools.values() for r in p.replicas), "slots freed")
