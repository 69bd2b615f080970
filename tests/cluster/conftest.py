"""One redis-server and one engine simulator per test module (a module that kills Redis makes its own per test)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.instances import Process, simulator
from tests.support.redis_server import RedisServer


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def engine() -> Iterator[Process]:
    sim = simulator(delay_ms=10)
    yield sim
    sim.close()
