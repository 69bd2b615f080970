"""The issue's black-box check: a real redis-server, a real llama.cpp simulator and two real `llama-orch serve
--state-url` processes over one pool config (room for 1 running and 1 queued task). Any instance serves any task."""

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
    engine_idle,
    frames,
    instance,
    one_terminal,
    pool_config,
)
from tests.support.redis_server import RedisServer


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory, engine: Process) -> Path:
    return pool_config(tmp_path_factory.mktemp("cluster"), engine.url)


@pytest.fixture(scope="module")
def pair(config: Path, redis_server: RedisServer) -> Iterator[list[Process]]:
    started = [instance(name, config, redis_server.url) for name in ("A", "B")]
    yield started
    for process in started:
        process.close()


@pytest.fixture(autouse=True)
def idle_engine(engine: Process) -> Iterator[None]:
    """Every test starts and ends with the engine idle (a task left running would take the one slot)."""
    assert engine_idle(engine, GUARD_S)
    yield
    assert engine_idle(engine, GUARD_S), "a task is still running on the engine"


def _submit(url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{url}/v1/tasks", json=body, timeout=GUARD_S)


def _accepted(url: str, body: dict[str, Any]) -> str:
    answer = _submit(url, body)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["task_id"])


def _read_all(url: str, task_id: str, **headers: str) -> list[Frame]:
    with httpx.stream("GET", f"{url}/v1/tasks/{task_id}/stream", headers=headers, timeout=GUARD_S) as answer:
        assert answer.status_code == 200, answer.read()
        return list(frames(answer))


def test_submit_on_a_stream_from_b(pair: list[Process]) -> None:
    a, b = pair
    task_id = _accepted(a.url, {"prompt": "Hello", "max_tokens": 40, "seed": 3})
    events = _read_all(b.url, task_id)
    assert one_terminal(events).event == "end"
    assert [f.data["i"] for f in events if f.event == "token"] == list(range(40))
    assert [f.id for f in events] == [str(n) for n in range(len(events))]


@pytest.mark.parametrize("first_reader", ["owner", "other"])
def test_reconnect_to_the_other_instance_with_last_event_id(pair: list[Process], first_reader: str) -> None:
    """The owner (A: it admitted the task with room, so it runs it) hands its own readers the pump's batches; the
    other instance reads them back from Redis. Either way round, a resume gets each event exactly once."""
    owner, other = pair
    task_id = _accepted(owner.url, {"prompt": "Hello", "max_tokens": 60, "seed": 4})
    a, b = (owner, other) if first_reader == "owner" else (other, owner)
    first: list[Frame] = []
    with httpx.stream("GET", f"{a.url}/v1/tasks/{task_id}/stream", timeout=GUARD_S) as answer:
        for frame in frames(answer):
            first.append(frame)
            if sum(f.event == "token" for f in first) == 5:
                break
    rest = _read_all(b.url, task_id, **{"Last-Event-ID": str(first[-1].id)})
    events = first + rest
    assert one_terminal(events).event == "end"
    assert [f.data["i"] for f in events if f.event == "token"] == list(range(60))  # each token exactly once
    assert [f.id for f in events] == [str(n) for n in range(len(events))]


def test_cancel_on_b_of_a_task_streamed_from_a(pair: list[Process], engine: Process) -> None:
    a, b = pair
    task_id = _accepted(a.url, LONG)
    events: list[Frame] = []
    with httpx.stream("GET", f"{a.url}/v1/tasks/{task_id}/stream", timeout=GUARD_S) as answer:
        for frame in frames(answer):
            events.append(frame)
            if sum(f.event == "token" for f in events) == 3:
                canceled_at = time.monotonic()
                assert httpx.post(f"{b.url}/v1/tasks/{task_id}/cancel", timeout=GUARD_S).status_code == 204
        ended_after = time.monotonic() - canceled_at
    terminal = one_terminal(events)
    assert terminal.event == "end" and terminal.data["finish_reason"] == "canceled"
    assert ended_after < 1.5, f"the stream ended {ended_after:.2f}s after the cancel"
    assert engine_idle(engine, 1.0), "the engine still runs the task a second after the cancel"


def test_kill_of_the_owner_while_b_streams(config: Path, redis_server: RedisServer, pair: list[Process]) -> None:
    _, b = pair
    owner = instance("owner", config, redis_server.url)
    try:
        task_id = _accepted(owner.url, LONG)  # room now: the instance that admits it runs it
        events: list[Frame] = []
        with httpx.stream("GET", f"{b.url}/v1/tasks/{task_id}/stream", timeout=GUARD_S) as answer:
            for frame in frames(answer):
                events.append(frame)
                if sum(f.event == "token" for f in events) == 3:
                    owner.kill()
                    killed_at = time.monotonic()
            ended_after = time.monotonic() - killed_at
    finally:
        owner.kill()
        owner.close()
    terminal = one_terminal(events)
    assert terminal.event == "error" and terminal.data["code"] == "INSTANCE_LOST" and terminal.data["retriable"]
    assert ended_after < 10.0, f"the orphan was ended {ended_after:.1f}s after the kill"
    # Its slot was freed: the cluster admits and runs a task again.
    events = _read_all(b.url, _accepted(b.url, {"prompt": "after", "max_tokens": 5}))
    assert one_terminal(events).event == "end"


def test_admission_holds_across_both_instances(pair: list[Process]) -> None:
    a, b = pair
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda i: _submit(pair[i % 2].url, {**LONG, "task_id": f"adm-{i}"}), range(6)))
    statuses = sorted(answer.status_code for answer in answers)
    try:
        assert statuses == [202, 202, 429, 429, 429, 429], [a.text for a in answers]
        for answer in answers:
            if answer.status_code == 429:
                assert answer.json()["code"] == "ADMISSION_REJECT" and int(answer.headers["Retry-After"]) >= 1
    finally:
        for answer in answers:
            if answer.status_code == 202:
                httpx.post(f"{b.url}/v1/tasks/{answer.json()['task_id']}/cancel", timeout=GUARD_S)


def test_an_identical_repeat_on_the_other_instance_is_not_admitted_twice(pair: list[Process]) -> None:
    """A client that lost the answer retries elsewhere: the same admission, one run. A different request under the
    same task id is still refused."""
    a, b = pair
    body = {"task_id": "retried-submit", "prompt": "Hello", "max_tokens": 20, "seed": 5}
    first, repeat = _submit(a.url, body), _submit(b.url, body)
    assert first.status_code == repeat.status_code == 202, (first.text, repeat.text)
    assert repeat.json()["task_id"] == first.json()["task_id"] == "retried-submit"
    other = _submit(b.url, {**body, "seed": 6})
    assert other.status_code == 400 and other.json()["code"] == "INVALID_PARAMS", other.text
    events = _read_all(b.url, "retried-submit")
    assert one_terminal(events).event == "end"
    assert sum(f.event == "started" for f in events) == 1
    assert [f.data["i"] for f in events if f.event == "token"] == list(range(20))


def test_a_reader_on_the_owner_holds_the_task_longer_than_stream_hold_ms(pair: list[Process]) -> None:
    """Its presence is recorded in Redis even when it opens before anything was written (off the first token's
    path): the owner does not cancel a task that is being read for longer than `stream_hold_ms` (2 s here)."""
    owner, _ = pair
    task_id = _accepted(owner.url, {"prompt": "Hello", "max_tokens": 300, "seed": 8})  # ~3 s at 10 ms a token
    events = _read_all(owner.url, task_id)
    assert one_terminal(events).event == "end" and events[-1].data["finish_reason"] != "canceled", events[-1]
    assert sum(f.event == "token" for f in events) == 300
