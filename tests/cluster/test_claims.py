"""The admission and claim scripts against a real redis-server. Leases: an instance that claims a task is alive
from that moment, even when Redis lost its lease (restarted empty) and its keeper has not renewed it yet, so no
other instance ends the task as INSTANCE_LOST. Engine load: a replica whose engine queues takes no new task."""

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


async def test_a_replica_whose_engine_queues_takes_no_new_task(redis_server: RedisServer) -> None:
    """The calling instance's view says the engine already queues requests (vLLM's waiting gauge): a claim waits,
    as one process would, until the engine catches up."""
    redis_server.client().flushall()
    state = RedisState(redis_server.url, None)
    queueing, caught_up = json.dumps([["r0", 4, 1, 0]]), json.dumps([["r0", 4, 1, 1]])
    try:
        admission = Admission("t1", "interactive", "p", 4, "reject", queueing, {"req": "{}", "pool": "p", "at": 0})
        _, claimed = await state.admit(admission, "me", 0)
        assert claimed is None
        assert await state.claim("p", "me", queueing, 0) is None
        assert isinstance(await state.claim("p", "me", caught_up, 0), Claim)
    finally:
        await state.aclose()
