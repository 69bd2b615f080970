"""The shared queue across two real instances: interactive before batch whichever instance admitted them,
drop-lru evicting another instance's task, a queued task canceled from the other instance, and a queued task's
deadline."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cluster.instances import (
    GUARD_S,
    LONG,
    Frame,
    Process,
    frames,
    instance,
    one_terminal,
    pool_config,
)
from tests.support.redis_server import RedisServer


def _pair(
    directory: Path, engine: Process, redis_server: RedisServer, queue: dict[str, Any], **settings: Any
) -> list[Process]:
    redis_server.client().flushall()
    config = pool_config(directory, engine.url, queue=queue, **settings)
    return [instance(name, config, redis_server.url) for name in ("A", "B")]


def _accepted(url: str, body: dict[str, Any]) -> str:
    answer = httpx.post(f"{url}/v1/tasks", json=body, timeout=GUARD_S)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["task_id"])


def _read(url: str, task_id: str) -> list[Frame]:
    with httpx.stream("GET", f"{url}/v1/tasks/{task_id}/stream", timeout=GUARD_S) as answer:
        return list(frames(answer))


@pytest.fixture
def stopped() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.close()


def test_interactive_before_batch_and_cancel_of_a_queued_task(
    tmp_path: Path, engine: Process, redis_server: RedisServer, stopped: list[Process]
) -> None:
    a, b = stopped[:] = _pair(tmp_path, engine, redis_server, {"capacity": 3, "policy": "reject"})
    blocker = _accepted(a.url, LONG)
    batch = _accepted(a.url, {"prompt": "b", "max_tokens": 3, "priority": "batch"})
    doomed = _accepted(b.url, {"prompt": "d", "max_tokens": 3})
    interactive = _accepted(b.url, {"prompt": "i", "max_tokens": 3, "priority": "interactive"})
    canceled = httpx.post(f"{a.url}/v1/tasks/{doomed}/cancel", timeout=GUARD_S)  # queued, admitted on B
    assert canceled.status_code == 204
    assert [(f.event, f.data["finish_reason"]) for f in _read(a.url, doomed)] == [("end", "canceled")]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        readers = [pool.submit(_read_timed, url, task) for url, task in ((a.url, batch), (b.url, interactive))]
        time.sleep(0.5)  # both readers wait on the queued tasks' streams
        httpx.post(f"{b.url}/v1/tasks/{blocker}/cancel", timeout=GUARD_S)
        (batch_started, batch_events), (interactive_started, interactive_events) = (r.result() for r in readers)
    assert one_terminal(batch_events).event == one_terminal(interactive_events).event == "end"
    # One slot: the interactive task, admitted after the batch one and on the other instance, ran first.
    assert interactive_started < batch_started


def _read_timed(url: str, task_id: str) -> tuple[float, list[Frame]]:
    """The stream, and when its `started` event arrived."""
    events: list[Frame] = []
    started = 0.0
    with httpx.stream("GET", f"{url}/v1/tasks/{task_id}/stream", timeout=GUARD_S) as answer:
        for frame in frames(answer):
            events.append(frame)
            if frame.event == "started":
                started = time.monotonic()
    return started, events


def test_drop_lru_evicts_a_batch_task_of_the_other_instance(
    tmp_path: Path, engine: Process, redis_server: RedisServer, stopped: list[Process]
) -> None:
    a, b = stopped[:] = _pair(tmp_path, engine, redis_server, {"capacity": 1, "policy": "drop-lru"})
    blocker = _accepted(a.url, LONG)
    victim = _accepted(a.url, {"prompt": "v", "max_tokens": 3, "priority": "batch"})
    newcomer = _accepted(b.url, {"prompt": "n", "max_tokens": 3, "priority": "interactive"})
    refused = httpx.post(f"{a.url}/v1/tasks", json={"prompt": "x", "priority": "batch"}, timeout=GUARD_S)
    assert refused.status_code == 429 and refused.json()["code"] == "ADMISSION_REJECT"  # never evicts interactive
    terminal = one_terminal(_read(b.url, victim))
    assert terminal.event == "error" and terminal.data["code"] == "QUEUE_FULL_DROP_LRU"
    httpx.post(f"{b.url}/v1/tasks/{blocker}/cancel", timeout=GUARD_S)
    assert one_terminal(_read(a.url, newcomer)).event == "end"


def test_a_queued_task_past_its_deadline_ends_deadline_unmet(
    tmp_path: Path, engine: Process, redis_server: RedisServer, stopped: list[Process]
) -> None:
    """It ends at its deadline, not when a slot frees (the blocker, unread, is held for 30 s: it keeps the slot)."""
    queue = {"capacity": 1, "policy": "reject"}
    a, b = stopped[:] = _pair(tmp_path, engine, redis_server, queue, stream_hold_ms=30_000)
    blocker = _accepted(a.url, LONG)
    late = _accepted(b.url, {"prompt": "late", "max_tokens": 3, "deadline_ms": 300})
    began = time.monotonic()
    terminal = one_terminal(_read(a.url, late))
    waited = time.monotonic() - began
    httpx.post(f"{a.url}/v1/tasks/{blocker}/cancel", timeout=GUARD_S)
    assert terminal.event == "error" and terminal.data["code"] == "DEADLINE_UNMET"
    assert waited < 10.0, f"ended after {waited:.1f}s, long past its deadline"
