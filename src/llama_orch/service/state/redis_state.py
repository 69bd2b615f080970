"""The shared state of scale-out mode in Redis: the atomic admission and slot scripts, per-task event streams
(one XADD per batch, a terminal entry, bounded length, expiry after the end), cancel messages (pub/sub), reader
presence, instance leases. Every Redis failure surfaces as `ApiError` STATE_UNAVAILABLE (503, retriable)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from llama_orch.errors import ApiError
from llama_orch.service.state import scripts
from llama_orch.service.state.batch import Batch, Item
from llama_orch.service.state.codec import decode, encode

__all__ = ["Admission", "Claim", "RedisState", "unavailable"]

logger = logging.getLogger("llama_orch.service")

PREFIX = "lo:"
CONTROL = PREFIX + "ctl"  # pub/sub channel: "cancel <task> <reason>" and "wake <pool>"
LEASE_MS = 3000  # an instance that has not renewed its lease for this long is dead
TASK_TTL_MS = 24 * 3_600_000  # an open task's keys, should every instance die
DONE_TTL_MS = 300_000  # a finished task's stream stays readable for reconnects this long
STREAM_MAXLEN = 100_000  # entries (batches) per task stream, approximately
_CONNECT_S = 1.0
_SOCKET_S = 2.0
_RETRY_S = 0.5  # with the connect timeout: a Redis that is down is a 503 within 3 s


def unavailable(exc: BaseException) -> ApiError:
    return ApiError("STATE_UNAVAILABLE", f"the shared state (Redis) is unavailable: {exc}", retry_after_ms=1000)


@dataclass(frozen=True, slots=True)
class Claim:
    """A queued task this instance now runs on `replica` (its slot is counted)."""

    task_id: str
    replica: str
    request: str
    admitted_ms: int
    queue_position: int
    cancel: str


@dataclass(frozen=True, slots=True)
class Admission:
    """What the admission script needs of a task and its pool."""

    task_id: str
    priority: str
    pool: str
    capacity: int
    policy: str
    replicas: str  # JSON, see `scripts`
    fields: dict[str, object]  # the task's hash


def _claimed(answer: list[Any] | None) -> Claim | str | None:
    if not answer:
        return None
    if answer[0] == "expired":
        return str(answer[1])
    _, task_id, replica, request, admitted, position, cancel = answer
    return Claim(task_id, replica, request, int(admitted), int(position), cancel)


def _batch(fields: dict[str, str]) -> Batch:
    """One stream entry: the batch of events numbered from `f`, final when it holds the terminal event."""
    return Batch(int(fields["f"]), decode(fields["b"]), "end" in fields)


def task_key(task_id: str) -> str:
    return f"{PREFIX}t:{task_id}"


def _stream(task_id: str) -> str:
    return f"{PREFIX}t:{task_id}:ev"


def _reader(task_id: str) -> str:
    return f"{PREFIX}t:{task_id}:rd"


def _lane(pool: str, priority: str) -> str:
    return f"{PREFIX}p:{pool}:q:{priority}"


def _counts(pool: str) -> str:
    return f"{PREFIX}p:{pool}:run"


def _session(session_id: str) -> str:
    return f"{PREFIX}s:{session_id}"


def _lease(instance: str) -> str:
    return f"{PREFIX}i:{instance}"


_RUNNING = PREFIX + "running"
_POOLS = PREFIX + "pools"  # instance -> digest of its pool config
_PRIORITIES = ("interactive", "batch")


class RedisState:
    def __init__(self, url: str, password_env: str | None) -> None:
        password = os.environ.get(password_env) if password_env else None
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url,
            password=password,
            decode_responses=True,
            socket_connect_timeout=_CONNECT_S,
            socket_timeout=_SOCKET_S,
            retry=Retry(NoBackoff(), 1),  # bounded: a Redis that is down is a quick 503, not a long retry
        )
        # Blocking stream reads wait longer than the socket timeout allows: their own connections.
        self.readers: aioredis.Redis = aioredis.Redis.from_url(
            url,
            password=password,
            decode_responses=True,
            socket_connect_timeout=_CONNECT_S,
            retry=Retry(NoBackoff(), 1),
        )
        self._admit = self.client.register_script(scripts.ADMIT)
        self._claim = self.client.register_script(scripts.CLAIM)
        self._append = self.client.register_script(scripts.APPEND)
        self._release = self.client.register_script(scripts.RELEASE)
        self._requeue = self.client.register_script(scripts.REQUEUE)
        self._finish = self.client.register_script(scripts.FINISH)
        self._orphan = self.client.register_script(scripts.ORPHAN)
        self._open = self.client.register_script(scripts.OPEN)

    async def aclose(self) -> None:
        await self.client.aclose()
        await self.readers.aclose()

    async def call(self, work: Awaitable[Any]) -> Any:
        """`work`, with a Redis failure as STATE_UNAVAILABLE. (Untyped: redis-py types replies as bytes | str even
        with `decode_responses`.)"""
        try:
            return await work
        except (RedisError, OSError) as exc:
            raise unavailable(exc) from None

    # -- admission and slots -----------------------------------------------------------------------------------

    async def admit(self, admission: Admission, instance: str, now_ms: int) -> tuple[list[Any], Claim | str | None]:
        """The admission script's answer (`{'dup'}`, `{'reject', depth}` or `{'queued', ahead, victim}`) and what
        this instance claimed in the same step (as `claim`)."""
        pool = admission.pool
        keys = [task_key(admission.task_id), _lane(pool, "interactive"), _lane(pool, "batch"), _counts(pool), _RUNNING]
        keys.append(_lease(instance))
        flat = [str(v) for pair in admission.fields.items() for v in pair]
        args: list[str | int] = [admission.task_id, admission.priority, admission.capacity, admission.policy]
        args += [admission.replicas, TASK_TTL_MS, instance, now_ms, task_key(""), LEASE_MS, *flat]
        answer = list(await self.call(self._admit(keys=keys, args=args)))
        return answer[:3], _claimed(answer[3:])

    async def claim(self, pool: str, instance: str, replicas: str, now_ms: int) -> Claim | str | None:
        """The next queued task this instance may run (a `Claim`), a task id whose deadline passed in the queue
        (a `str`), or None."""
        keys = [_lane(pool, "interactive"), _lane(pool, "batch"), _counts(pool), _RUNNING, _lease(instance)]
        return _claimed(
            await self.call(self._claim(keys=keys, args=[instance, replicas, now_ms, task_key(""), LEASE_MS]))
        )

    async def release(self, task_id: str, pool: str, replica: str) -> None:
        await self.call(self._release(keys=[_RUNNING, _counts(pool)], args=[task_id, replica]))
        await self.call(self.client.publish(CONTROL, f"wake {pool}"))

    async def requeue(self, task_id: str, pool: str, priority: str, tried: list[str]) -> None:
        await self.call(
            self._requeue(keys=[task_key(task_id), _lane(pool, priority)], args=[task_id, json.dumps(tried)])
        )

    async def unqueue(self, task_id: str, pool: str, priority: str) -> bool:
        """Take a queued task out of its lane (cancel before it ran); True when it was there."""
        return bool(await self.call(self.client.lrem(_lane(pool, priority), 1, task_id)))

    async def gauges(self, pool: str) -> tuple[dict[str, int], dict[str, int]]:
        """The pool's queue depth per priority and its running tasks per replica."""
        async with self.client.pipeline(transaction=False) as pipe:
            for priority in _PRIORITIES:
                pipe.llen(_lane(pool, priority))
            pipe.hgetall(_counts(pool))
            *depths, counts = await self.call(pipe.execute())
        return dict(zip(_PRIORITIES, map(int, depths), strict=True)), {r: int(n) for r, n in counts.items()}

    # -- tasks -------------------------------------------------------------------------------------------------

    async def task(self, task_id: str) -> dict[str, str]:
        """The task's hash ({} when unknown)."""
        return dict(await self.call(self.client.hgetall(task_key(task_id))))

    async def mark_cancel(self, task_id: str, reason: str) -> None:
        """Record the cancel (a claim sees it) and tell the instance that runs the task."""
        await self.call(self.client.hsetnx(task_key(task_id), "cancel", reason))
        await self.call(self.client.publish(CONTROL, f"cancel {task_id} {reason}"))

    async def wake(self, pool: str) -> None:
        await self.call(self.client.publish(CONTROL, f"wake {pool}"))

    # -- event streams -----------------------------------------------------------------------------------------

    async def append(self, task_id: str, batch: Batch) -> bool:
        """One entry per batch, numbered by its first event (the entry id is `<first>-1`); False when the task is no
        longer running in Redis (ended by another instance, or lost with a Redis restart)."""
        if not batch.items:
            return True
        number = batch.next
        keys = [task_key(task_id), _stream(task_id)]
        args: list[str | int] = [batch.first, number, encode(batch.items), STREAM_MAXLEN]
        return bool(await self.call(self._append(keys=keys, args=args)))

    async def finish(self, task_id: str, items: list[Item]) -> bool:
        """Append the last entry (ending with the terminal event) unless the task already ended; True if written."""
        keys = [task_key(task_id), _stream(task_id)]
        return bool(await self.call(self._finish(keys=keys, args=[encode(items), DONE_TTL_MS, STREAM_MAXLEN])))

    async def open(self, task_id: str, seen: int, hold_ms: int, *, history: bool = False) -> tuple[str, list[Batch]]:
        """Open the task's stream for a reader (present for `hold_ms` from now): where its events after number
        `seen` start (for `read`) and, with `history`, those written so far. NOT_FOUND for an unknown task;
        CONFLICT when those events are no longer kept."""
        keys = [task_key(task_id), _reader(task_id), _stream(task_id)]
        answer = await self.call(self._open(keys=keys, args=[seen, max(hold_ms, 1), int(history)]))
        if answer is None:
            raise ApiError("NOT_FOUND", f"no task {task_id!r}", task_id=task_id)
        start, oldest, entries = answer
        if int(oldest) > seen + 1:
            raise ApiError("CONFLICT", f"the events of task {task_id!r} after {seen} are no longer kept")
        return str(start), [_batch(dict(zip(f[::2], f[1::2], strict=True))).after(seen) for _, f in entries]

    async def read(self, task_id: str, start: str, seen: int, lost: Item) -> AsyncIterator[Batch]:
        """The task's events after number `seen` (from `open`'s `start`), in entries as they come (from the first one
        after `start`: XREAD excludes it). A task whose keys
        vanished (Redis restarted empty) ends with `lost`."""
        stream = _stream(task_id)
        number = seen + 1
        while True:
            try:
                answer = await self.call(self.readers.xread({stream: start}, count=256, block=1000))
                if not answer and not await self.call(self.readers.hexists(task_key(task_id), "state")):
                    yield Batch(number, [lost], True)
                    return
            except ApiError:  # Redis away: the reader waits (heartbeats keep its connection) until it is back
                await asyncio.sleep(_RETRY_S)
                continue
            for entry_id, fields in answer[0][1] if answer else ():
                start = entry_id
                batch = _batch(fields).after(seen)
                number = int(fields["n"])
                yield batch
                if batch.final:
                    return

    async def reader_present(self, task_id: str, hold_ms: int) -> None:
        """A reader is (or was just now) on the task's stream: the task is held for `hold_ms` from now."""
        await self.call(self.client.set(_reader(task_id), "1", px=max(hold_ms, 1)))

    async def unread(self, task_ids: list[str]) -> dict[str, tuple[bool, bool]]:
        """Per task: (no reader is present, a reader ever opened the stream)."""
        async with self.client.pipeline(transaction=False) as pipe:
            for task_id in task_ids:
                pipe.exists(_reader(task_id))
                pipe.hget(task_key(task_id), "read")
            answers = await self.call(pipe.execute())
        return {t: (not answers[2 * i], answers[2 * i + 1] == "1") for i, t in enumerate(task_ids)}

    # -- sessions ----------------------------------------------------------------------------------------------

    async def session(self, session_id: str) -> tuple[dict[str, str], int]:
        """The session's hash and its remaining TTL in ms ({} when unknown or expired)."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hgetall(_session(session_id))
            pipe.pttl(_session(session_id))
            fields, ttl_ms = await self.call(pipe.execute())
        return (dict(fields), int(ttl_ms)) if fields and ttl_ms > 0 else ({}, 0)

    async def save_turn(self, session_id: str, pool: str, replica: str, tokens: int, warm: bool, ttl_ms: int) -> None:
        key = _session(session_id)
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.hincrby(key, "turns", 1)
                pipe.hincrby(key, "tokens", tokens)
                pipe.hset(key, mapping={"pool": pool, "replica": replica, "warm": "1" if warm else "0"})
                pipe.pexpire(key, ttl_ms)
                await self.call(pipe.execute())
        except ApiError as error:  # the turn ran; only its bookkeeping is lost
            logger.warning("cannot record the turn of session %s: %s", session_id, error.message)

    async def delete_session(self, session_id: str) -> bool:
        return bool(await self.call(self.client.delete(_session(session_id))))

    # -- instances ---------------------------------------------------------------------------------------------

    async def renew_lease(self, instance: str, pools_digest: str) -> None:
        """The instance is alive, with the pool config of this digest, for `LEASE_MS` from now."""
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.set(_lease(instance), "1", px=LEASE_MS)
            pipe.hset(_POOLS, instance, pools_digest)
            await self.call(pipe.execute())

    async def drop_lease(self, instance: str) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.delete(_lease(instance))
            pipe.hdel(_POOLS, instance)
            await self.call(pipe.execute())

    async def pool_digests(self) -> dict[str, str]:
        """The pool-config digest of every live instance (those of dead ones are dropped)."""
        digests: dict[str, str] = await self.call(self.client.hgetall(_POOLS))
        async with self.client.pipeline(transaction=False) as pipe:
            for instance in digests:
                pipe.exists(_lease(instance))
            alive = await self.call(pipe.execute())
        dead = [instance for instance, present in zip(digests, alive, strict=True) if not present]
        if dead:
            await self.call(self.client.hdel(_POOLS, *dead))
        return {instance: digest for instance, digest in digests.items() if instance not in dead}

    async def orphans(self, me: str) -> list[tuple[str, str]]:
        """(task, dead owner) for every running task whose owner's lease expired."""
        running: dict[str, str] = await self.call(self.client.hgetall(_RUNNING))
        owners = sorted({owner for owner in running.values() if owner != me})
        if not owners:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for owner in owners:
                pipe.exists(_lease(owner))
            alive = await self.call(pipe.execute())
        dead = {owner for owner, present in zip(owners, alive, strict=True) if not present}
        return [(task, owner) for task, owner in running.items() if owner in dead]

    async def end_orphan(self, task_id: str, owner: str, items: list[Item]) -> bool:
        pool = await self.call(self.client.hget(task_key(task_id), "pool")) or ""
        keys = [_RUNNING, task_key(task_id), _stream(task_id), _counts(pool)]
        args: list[str | int] = [task_id, owner, encode(items), DONE_TTL_MS, STREAM_MAXLEN]
        return bool(await self.call(self._orphan(keys=keys, args=args)))

    @asynccontextmanager
    async def control(self) -> AsyncIterator[aioredis.client.PubSub]:
        pubsub = self.readers.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(CONTROL)
            yield pubsub
        finally:
            await pubsub.aclose()
