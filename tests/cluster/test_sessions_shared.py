"""Sessions across instances: the binding (pool, replica), turns and TTL live in Redis, so a session sticks to
its replica whichever instance gets the next turn, and `kv_hint: reuse` keeps its cache warm."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cluster.instances import GUARD_S, LONG, Process, frames, instance, one_terminal, simulator
from tests.support.redis_server import RedisServer


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Process]]:
    server = RedisServer().start()
    sim = simulator(delay_ms=5)
    replicas = [{"id": r, "base_url": sim.url, "api": "native", "max_inflight": 1} for r in ("r0", "r1")]
    config = {"health_interval_ms": 200, "pools": [{"id": "p", "engine": "llamacpp", "replicas": replicas}]}
    path: Path = tmp_path_factory.mktemp("sessions") / "pools.json"
    path.write_text(json.dumps(config))
    started = [instance(name, path, server.url) for name in ("A", "B")]
    yield started
    for process in started:
        process.close()
    sim.close()
    server.close()


def _turn(url: str, body: dict[str, object]) -> list[object]:
    answer = httpx.post(f"{url}/v1/tasks", json=body, timeout=GUARD_S)
    assert answer.status_code == 202, answer.text
    with httpx.stream("GET", f"{url}/v1/tasks/{answer.json()['task_id']}/stream", timeout=GUARD_S) as stream:
        return list(frames(stream))


def test_a_session_sticks_to_its_replica_on_every_instance(pair: list[Process]) -> None:
    a, b = pair
    blocker = httpx.post(f"{a.url}/v1/tasks", json={**LONG, "task_id": "blocker"}, timeout=GUARD_S)
    assert blocker.status_code == 202  # r0 is busy: the session's first turn goes to r1
    turn = {"prompt": "hi", "max_tokens": 4, "session_id": "s-1", "kv_hint": "reuse"}
    first = _turn(a.url, turn)
    bound = first[0].data["replica_id"]  # type: ignore[attr-defined]
    assert one_terminal(first).event == "end"  # type: ignore[arg-type]
    httpx.post(f"{a.url}/v1/tasks/blocker/cancel", timeout=GUARD_S)
    info = httpx.get(f"{b.url}/v1/sessions/s-1", timeout=GUARD_S)
    assert info.status_code == 200, info.text
    assert info.json()["replica_id"] == bound and info.json()["turns"] == 1
    for url in (b.url, a.url, b.url):  # both replicas idle: only the binding decides
        events = _turn(url, turn)
        assert events[0].data["replica_id"] == bound  # type: ignore[attr-defined]
    assert httpx.get(f"{a.url}/v1/sessions/s-1", timeout=GUARD_S).json()["turns"] == 4
    assert httpx.delete(f"{b.url}/v1/sessions/s-1", timeout=GUARD_S).status_code == 204
    assert httpx.get(f"{a.url}/v1/sessions/s-1", timeout=GUARD_S).status_code == 404
