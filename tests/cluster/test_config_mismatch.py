"""Instances on one Redis must share the pool config (admission takes each caller's limits): one whose pools differ
from a running peer's says so at start."""

from __future__ import annotations

from pathlib import Path

from tests.cluster.instances import Process, instance, pool_config
from tests.support.polling import wait_for
from tests.support.redis_server import RedisServer


def test_an_instance_with_other_pools_than_its_peers_says_so(
    tmp_path: Path, engine: Process, redis_server: RedisServer
) -> None:
    redis_server.client().flushall()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    same = [instance(n, pool_config(tmp_path / "a", engine.url), redis_server.url) for n in ("A", "B")]
    differs = pool_config(tmp_path / "b", engine.url, queue={"capacity": 5, "policy": "reject"})
    other = instance("C", differs, redis_server.url)
    try:
        assert "pool config differs" not in same[1].log_path.read_text()
        assert wait_for(lambda: "pool config differs" in other.log_path.read_text(), 15.0), other.log_tail()
    finally:
        for process in (*same, other):
            process.close()
