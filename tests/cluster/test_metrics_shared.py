"""/metrics in scale-out mode: each instance names itself, and every instance reports the cluster's queue depth and
in-flight counts as Redis holds them (whichever instance admitted or runs the tasks)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cluster.instances import GUARD_S, LONG, Process, instance, pool_config
from tests.service.helpers import Family, parse_metrics, total
from tests.support.polling import wait_for
from tests.support.redis_server import RedisServer


@pytest.fixture
def pair(tmp_path: Path, engine: Process, redis_server: RedisServer) -> Iterator[list[Process]]:
    redis_server.client().flushall()
    config = pool_config(tmp_path, engine.url, stream_hold_ms=30_000)  # unread tasks keep running while scraped
    started = [instance(name, config, redis_server.url) for name in ("A", "B")]
    yield started
    for process in started:
        process.close()


def _scrape(process: Process) -> dict[str, Family]:
    answer = httpx.get(f"{process.url}/metrics", timeout=GUARD_S)
    assert answer.status_code == 200, answer.text
    return parse_metrics(answer.text)


def test_every_instance_reports_the_cluster_gauges(pair: list[Process]) -> None:
    a, b = pair
    running = httpx.post(f"{a.url}/v1/tasks", json=LONG, timeout=GUARD_S).json()["task_id"]
    queued = httpx.post(f"{a.url}/v1/tasks", json={**LONG, "task_id": "q1"}, timeout=GUARD_S).json()["task_id"]
    try:
        for process in (a, b):
            families = _scrape(process)
            assert total(families, "cluster_inflight", pool_id="p", replica_id="r0") == 1, process.name
            assert total(families, "cluster_queue_depth", pool_id="p", priority="interactive") == 1, process.name
            [(_, labels, value)] = families["instance_info"].samples
            assert labels["state"] == "redis" and value == 1
        ids = {_scrape(p)["instance_info"].samples[0][1]["instance_id"] for p in (a, b)}
        assert len(ids) == 2, "two instances, two ids"
    finally:
        for task_id in (queued, running):
            httpx.post(f"{b.url}/v1/tasks/{task_id}/cancel", timeout=GUARD_S)
    assert wait_for(lambda: total(_scrape(b), "cluster_inflight", pool_id="p", replica_id="r0") == 0, 10.0)
    assert total(_scrape(a), "cluster_queue_depth", pool_id="p") == 0
