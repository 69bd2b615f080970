"""Redis trouble is a clear answer, never a hang: two real instances, a real redis-server killed (-9) and
restarted empty on the same port, or stalled (SIGSTOP) and resumed with its data."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

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
    simulator,
)
from tests.support.redis_server import RedisServer


@pytest.fixture  # per test, over the module's: each test kills and restarts Redis
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture
def engine() -> Iterator[Process]:
    sim = simulator(delay_ms=10)
    yield sim
    sim.close()


@pytest.fixture
def pair(tmp_path: Path, engine: Process, redis_server: RedisServer) -> Iterator[list[Process]]:
    config = pool_config(tmp_path, engine.url)
    started = [instance(name, config, redis_server.url) for name in ("A", "B")]
    yield started
    for process in started:
        process.close()


def test_redis_down_is_a_503_and_up_again_is_accepted(pair: list[Process], redis_server: RedisServer) -> None:
    a, b = pair
    redis_server.kill()
    began = time.monotonic()
    answer = httpx.post(f"{a.url}/v1/tasks", json={"prompt": "x", "max_tokens": 3}, timeout=GUARD_S)
    answered_after = time.monotonic() - began
    assert answer.status_code == 503 and answer.json()["code"] == "STATE_UNAVAILABLE", answer.text
    assert int(answer.headers["Retry-After"]) >= 1
    assert answered_after < 3.0, f"answered after {answered_after:.1f}s"
    redis_server.start()
    deadline = time.monotonic() + 15.0
    while (
        answer := httpx.post(f"{b.url}/v1/tasks", json={"prompt": "x", "max_tokens": 3}, timeout=5)
    ).status_code != 202:
        assert time.monotonic() < deadline, f"not accepted again within 15 s: {answer.text}"
        time.sleep(0.2)
    with httpx.stream("GET", f"{a.url}/v1/tasks/{answer.json()['task_id']}/stream", timeout=GUARD_S) as stream:
        assert one_terminal(list(frames(stream))).event == "end"


def _disturbed_at_the_third_token(pair: list[Process], disturb: Callable[[], None]) -> list[Frame]:
    """A long task submitted on A and read from B, with `disturb` done to Redis after its third token: the events."""
    a, b = pair
    answer = httpx.post(f"{a.url}/v1/tasks", json=LONG, timeout=GUARD_S)
    assert answer.status_code == 202, answer.text
    events: list[Frame] = []
    with httpx.stream("GET", f"{b.url}/v1/tasks/{answer.json()['task_id']}/stream", timeout=GUARD_S) as stream:
        for frame in frames(stream):
            events.append(frame)
            if sum(f.event == "token" for f in events) == 3:
                disturb()
    return events


def test_redis_restarted_empty_ends_the_tasks_it_lost(
    pair: list[Process], redis_server: RedisServer, engine: Process
) -> None:
    def restart_empty() -> None:
        redis_server.kill()
        redis_server.start()

    terminal = one_terminal(_disturbed_at_the_third_token(pair, restart_empty))
    assert terminal.event == "error" and terminal.data["code"] == "STATE_UNAVAILABLE", terminal
    assert engine_idle(engine, 5.0), "the engine still runs the task Redis lost"


def test_redis_stalled_mid_stream_ends_the_stream_once(
    pair: list[Process], redis_server: RedisServer, engine: Process
) -> None:
    def stall() -> None:
        redis_server.pause()
        time.sleep(4.0)  # longer than the socket timeout: the owner's writes fail meanwhile
        redis_server.resume()

    events = _disturbed_at_the_third_token(pair, stall)
    terminal = one_terminal(events)
    # The stall outlasts the owner's lease (3 s): whichever comes first once Redis answers ends the task, the owner
    # (its events could not be written) or the other instance (the owner's lease lapsed). Either is one retriable
    # terminal event, never a canceled end the client did not ask for.
    assert terminal.event == "error" and terminal.data["retriable"], terminal
    assert terminal.data["code"] in ("STATE_UNAVAILABLE", "INSTANCE_LOST"), terminal
    assert [int(f.id) for f in events if f.id] == list(range(len(events))), "events lost or repeated"
    assert engine_idle(engine, 5.0), "the engine still runs a task whose stream could not be written"
