"""Leases against a real redis-server: an instance that claims a task is alive from that moment, even when Redis
lost its lease (restarted empty) and its keeper has not renewed it yet, so no other instance ends the task as
INSTANCE_LOST."""

from __future__ import annotations

import json

from llama_orch.service.state.redis_state import Admission, Claim, RedisState
from tests.support.redis_server import RedisServer

_REPLICAS = json.dumps([["r0", 1, 1]])


def _admission(task_id: str) -> Admission:
    return Admission(task_id, "interactive", "p", 4, "reject", _REPLICAS, {"req": "{}", "pool": "p", "at": 0})


async def test_a_task_claimed_at_admission_is_no_orphan(redis_server: RedisServer) -> None:
    redis_server.client().flushall()  # no instance has a lease, as right after Redis restarted empty
    state = RedisState(redis_server.url, None)
    try:
        _, claimed = await state.admit(_admission("t1"), "owner", 0)
        assert isinstance(claimed, Claim)
        assert await state.orphans("other") == []
    finally:
        await state.aclose()


async def test_a_task_claimed_from_the_queue_is_no_orphan(redis_server: RedisServer) -> None:
    redis_server.client().flushall()
    state = RedisState(redis_server.url, None)
    try:
        await state.admit(_admission("t1"), "first", 0)
        _, queued = await state.admit(_admission("t2"), "first", 0)
        assert queued is None  # r0 is full: t2 waits
        await state.release("t1", "p", "r0")
        assert isinstance(await state.claim("p", "second", _REPLICAS, 0), Claim)
        assert await state.orphans("other") == []
    finally:
        await state.aclose()
