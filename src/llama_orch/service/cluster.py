"""Scale-out mode (`state_url`): this instance is one of many that form one orchestrator over Redis.

- Admission is one Lua script over the pool's shared queue and slot counts; any instance then claims queued
  tasks (interactive first) for the replicas with room, so N instances admit and dispatch exactly as one would.
- The instance that claims a task runs it: its events go, one entry per batch, to the task's Redis stream, which
  any instance reads (SSE resume by event number). It holds a lease; when it dies, another instance ends its
  tasks once (INSTANCE_LOST) and frees their slots.
- Cancel from any instance is a pub/sub message to the one that runs the task (a queued one is simply taken out).
- A task nobody reads (no reader present on any instance for `stream_hold_ms`) is canceled by its owner.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Coroutine
from contextlib import suppress
from typing import Any, cast, get_args

from llama_orch_gen.contracts.events import End
from llama_orch_gen.contracts.task_request import TaskRequest
from redis.exceptions import RedisError

from llama_orch import events
from llama_orch.errors import ApiError
from llama_orch.service.orchestrator import Orchestrator
from llama_orch.service.pools import Pool, ReplicaState
from llama_orch.service.runs import CancelReason, TaskRun, error_event
from llama_orch.service.state.batch import Batch, Item
from llama_orch.service.state.redis_state import Admission, Claim, RedisState
from llama_orch.service.state.shared_pool import SharedPool
from llama_orch.service.state.shared_sessions import SharedSessions

__all__ = ["Cluster"]

logger = logging.getLogger("llama_orch.service")

_LEASE_EVERY_S = 1.0
_RETRY_S = 0.5  # between attempts to write a terminal entry while Redis is away
_RECENT_CANCELS = 4096  # cancels heard for tasks not (yet) running here: a claim that raced its cancel sees it
_CANCEL_REASONS = frozenset(get_args(CancelReason))
_DEADLINE_PASSED = "the task deadline passed while it waited in the queue"
_LOST = error_event("STATE_UNAVAILABLE", "the shared state lost this task (Redis restarted empty)", None)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _canceled() -> Item:
    return events.end(End.model_construct(tokens_out=0, decode_time_ms=0.0, finish_reason="canceled"))


class Cluster:
    def __init__(self, orch: Orchestrator, state: RedisState) -> None:
        self.orch = orch
        self.state = state
        self.instance = orch.instance_id
        self.hold_ms = int(orch.hold_s * 1000)
        self.heartbeat_s = (orch.config.sse_heartbeat_ms or 15_000) / 1000.0
        pools = json.dumps([p.model_dump(mode="json") for p in orch.config.pools], sort_keys=True)
        self.pools_digest = hashlib.sha256(pools.encode()).hexdigest()[:16]
        self._pools_compared = False
        self._loops: list[asyncio.Task[None]] = []
        self._jobs: set[asyncio.Task[None]] = set()
        self._claiming: dict[str, asyncio.Lock] = {pool_id: asyncio.Lock() for pool_id in orch.pools}
        self._recent_cancels: OrderedDict[str, CancelReason] = OrderedDict()
        self._local: dict[str, set[asyncio.Queue[Batch | None]]] = {}  # readers here of the tasks running here
        self._written: dict[str, int] = {}  # of each task running here: the number of the next event to write
        for pool in orch.pools.values():
            assert isinstance(pool, SharedPool)
            pool.cluster = self
        self.sessions = orch.sessions = SharedSessions(orch.sessions, state, self._spawn)

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        with suppress(ApiError):  # Redis down at startup: submits answer 503 until it is back
            await self.state.renew_lease(self.instance, self.pools_digest)
            await self._compare_pools()  # else on the first renewal that reaches Redis
        loop = asyncio.get_running_loop()
        self._loops = [loop.create_task(self._listen()), loop.create_task(self._keeper())]
        logger.info("scale-out instance %s", self.instance, extra={"instance": self.instance})

    async def _compare_pools(self) -> None:
        peers = sorted(i for i, d in (await self.state.pool_digests()).items() if d != self.pools_digest)
        self._pools_compared = True
        if peers:
            logger.warning(
                "this instance's pool config differs from that of instance(s) %s on the same Redis: each admits and "
                "dispatches by its own limits, so together they do not act as one orchestrator; start every "
                "instance with the same pools",
                ", ".join(peers),
            )

    async def stop(self) -> None:
        for task in [*self._loops, *self._jobs]:
            task.cancel()
        await asyncio.gather(*self._loops, *self._jobs, return_exceptions=True)
        with suppress(ApiError):
            await self.state.drop_lease(self.instance)
        await self.state.aclose()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        job = asyncio.get_running_loop().create_task(work)
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    # -- admission ---------------------------------------------------------------------------------------------

    async def submit(self, task: TaskRequest) -> TaskRun:
        """Admit a task cluster-wide (or raise `ApiError`); the returned run carries its queue facts."""
        if task.session_id is not None:
            await self.sessions.load(task.session_id)
        run, pool = self.orch.prepare(task)
        try:
            pool.check_ready()
            admission = Admission(
                run.task_id, run.priority, pool.id, pool.capacity, pool.policy, _replicas(pool), self._fields(run)
            )
            answer, claimed = await self.state.admit(admission, self.instance, _now_ms())
            if answer[0] == "dup":
                return await self._repeated(run, pool, admission.fields["req"])
            if answer[0] == "reject":
                raise pool.full(int(answer[1]))
        except ApiError as error:
            self.orch.count_rejection(error, pool.engine)
            raise
        _, ahead, victim = answer
        run.queue_position = int(ahead)
        run.predicted_start_ms = pool.predict_ms(run.queue_position)
        self.orch.count_admission(run, pool)
        if victim:
            message = "dropped from a full queue (drop-lru) for a newer task"
            with suppress(ApiError):  # admitted: what fails now is the victim's, not this task's
                await self.state.finish(victim, [error_event("QUEUE_FULL_DROP_LRU", message, None)])
            self.orch.metrics.inc("admission_backpressure_events_total", engine=pool.engine, policy="drop-lru")
        if claimed is not None:
            await self._claimed(pool, claimed)
        elif task.deadline_ms is not None:
            deadline_s = task.deadline_ms / 1000.0
            asyncio.get_running_loop().call_later(
                deadline_s, self._spawn, self._expire(run.task_id, pool.id, run.priority)
            )
        return run

    async def _expire(self, task_id: str, pool_id: str, priority: str) -> None:
        """Its deadline passed: a task still queued ends now (a claim that wins the race runs it instead; should
        this instance die first, the claim that meets the task ends it)."""
        try:
            if await self.state.unqueue(task_id, pool_id, priority):
                await self.state.finish(task_id, [error_event("DEADLINE_UNMET", _DEADLINE_PASSED, None)])
        except ApiError as error:
            logger.warning("cannot end task %s at its deadline: %s", task_id, error.message)

    async def _repeated(self, run: TaskRun, pool: Pool, request: object) -> TaskRun:
        """A task id some instance already admitted: an identical repeat (a client retrying a submit whose answer it
        lost) is answered with the first admission and not admitted again; another request under it is refused."""
        kept = await self.state.task(run.task_id)
        if kept.get("req") != request:
            raise ApiError("INVALID_PARAMS", f"task {run.task_id!r} already exists", field="task_id")
        run.queue_position = int(kept.get("qpos", 0))
        run.predicted_start_ms = pool.predict_ms(run.queue_position)
        return run

    def _fields(self, run: TaskRun) -> dict[str, object]:
        task = run.task
        deadline = 0 if task.deadline_ms is None else _now_ms() + task.deadline_ms
        return {
            "req": task.model_dump_json(exclude_none=True),
            "pool": run.pool_id,
            "prio": run.priority,
            "at": _now_ms(),
            "dl": deadline,
            "aff": run.affinity or "",
            "strict": "1" if run.affinity and task.kv_hint == "reuse" else "0",
        }

    def wake(self, pool: Pool) -> None:
        """Claim what this instance can run now (a slot was freed, readiness changed, or another instance said so)."""
        if not self.orch.draining:
            self._spawn(self._claim_quietly(pool))

    async def _claim_quietly(self, pool: Pool) -> None:
        try:
            await self._claim_all(pool)
        except ApiError as error:
            logger.warning("cannot claim tasks of pool %s: %s", pool.id, error.message)

    async def _claim_all(self, pool: Pool) -> None:
        async with self._claiming[pool.id]:
            while not self.orch.draining:
                got = await self.state.claim(pool.id, self.instance, _replicas(pool), _now_ms())
                if got is None:
                    return
                await self._claimed(pool, got)

    async def _claimed(self, pool: Pool, got: Claim | str) -> None:
        """Run what this instance claimed, or end the task whose deadline passed in the queue; then claim on."""
        if isinstance(got, str):
            with suppress(ApiError):
                await self.state.finish(got, [error_event("DEADLINE_UNMET", _DEADLINE_PASSED, None)])
            self.wake(pool)
        else:
            self._run_claimed(pool, got)

    def _run_claimed(self, pool: Pool, claim: Claim) -> None:
        loop = asyncio.get_running_loop()
        task = TaskRequest.model_validate_json(claim.request)
        admitted_at = loop.time() - max(0, _now_ms() - claim.admitted_ms) / 1000.0
        run = TaskRun(
            task,
            pool.id,
            capacity=self.orch.buffer_events,
            hold_s=self.orch.hold_s,
            queue_position=claim.queue_position,
            predicted_ms=0,
            admitted_at=admitted_at,
        )
        reason = self._recent_cancels.pop(run.task_id, None) or claim.cancel
        if reason:
            run.cancel(cast(CancelReason, reason) if reason in _CANCEL_REASONS else "client")
        replica = next(r for r in pool.replicas if r.id == claim.replica)
        run.readers = 1  # the pump reads it, into the task's stream
        self.orch.runs[run.task_id] = run
        self._written[run.task_id] = 0
        self._spawn(self._pump(run))
        pool.start(run, replica)

    async def release(self, run: TaskRun, replica: ReplicaState) -> None:
        try:
            await self.state.release(run.task_id, run.pool_id, replica.id)
        except ApiError as error:  # the slot is freed by whoever notices the lease of this instance lapse
            logger.warning("cannot release the slot of task %s: %s", run.task_id, error.message)

    def requeue(self, run: TaskRun) -> None:
        """No replica started the run: back to the shared queue (nothing was streamed); any instance may take it."""
        self.orch.runs.pop(run.task_id, None)
        run.fail("WORKER_RESET", "requeued", lambda _: None)  # ends this instance's pump without writing
        self._spawn(self._requeue(run))

    async def _requeue(self, run: TaskRun) -> None:
        try:
            await self.state.requeue(run.task_id, run.pool_id, run.priority, sorted(run.tried))
            await self.state.wake(run.pool_id)
        except ApiError as error:
            logger.warning("cannot requeue task %s: %s", run.task_id, error.message)

    # -- streams -----------------------------------------------------------------------------------------------

    async def _pump(self, run: TaskRun) -> None:
        """Copy the run's batches to its Redis stream (one entry per engine read), then hand each to the readers on
        this instance. A run whose stream cannot be written is canceled (the engine call ends now) and its stream
        ends with STATE_UNAVAILABLE, not with what the cancel made of it: the client did not cancel."""
        lost: Item | None = None
        try:
            async for batch in run.batches():
                if self.orch.runs.get(run.task_id) is not run:
                    return  # requeued: another attempt writes the stream
                if batch.final:
                    terminal = Batch(self._written[run.task_id], batch.items if lost is None else [lost], True)
                    if await self._write_terminal(run.task_id, terminal.items):
                        self._publish(run.task_id, terminal)
                elif lost is None:
                    try:
                        if not await self.state.append(run.task_id, batch):
                            raise ApiError("STATE_UNAVAILABLE", "the task ended elsewhere or was lost by Redis")
                    except ApiError as error:
                        logger.warning("cannot write the stream of task %s: %s", run.task_id, error.message)
                        lost = error_event(
                            "STATE_UNAVAILABLE", f"the task's events could not be shared: {error.message}", None
                        )
                        self.orch.cancel(run.task_id, "shutdown")
                    else:
                        self._written[run.task_id] = batch.next
                        self._publish(run.task_id, batch)
        finally:
            self._written.pop(run.task_id, None)
            self._publish(run.task_id, None)  # readers still here read on from Redis
            self.orch.delivered(run)

    async def _write_terminal(self, task_id: str, items: list[Item]) -> bool:
        """Written once Redis answers again, however long it is away: readers waiting on the stream get it then.
        False when the task had already ended there (another instance wrote its terminal event)."""
        while True:
            try:
                return await self.state.finish(task_id, items)
            except ApiError as error:
                logger.warning("cannot end the stream of task %s yet: %s", task_id, error.message)
                await asyncio.sleep(_RETRY_S)

    def _publish(self, task_id: str, batch: Batch | None) -> None:
        for queue in self._local.get(task_id, ()):
            queue.put_nowait(batch)

    async def open_stream(self, task_id: str, seen: int) -> AsyncIterator[Batch]:
        """The events after number `seen`, from any instance; `ApiError` NOT_FOUND / CONFLICT before the first. On
        the instance that runs the task they come from its pump as soon as Redis has them (not read back)."""
        queue: asyncio.Queue[Batch | None] | None = None
        if task_id in self.orch.runs:
            queue = asyncio.Queue()
            self._local.setdefault(task_id, set()).add(queue)  # before the history: no batch falls in between
            if seen < 0 and self._written.get(task_id) == 0:  # nothing written: no history to wait for
                self._spawn(self._mark_reader(task_id))
                return self._local_batches(task_id, queue, [], seen)
        try:
            start, history = await self.state.open(task_id, seen, self.hold_ms, history=queue is not None)
            if queue is None:
                return self.state.read(task_id, start, seen, _LOST)
        except BaseException:
            self._unsubscribe(task_id, queue)
            raise
        return self._local_batches(task_id, queue, history, seen)

    async def _mark_reader(self, task_id: str) -> None:
        """The reader's presence, recorded off the first token's path (as `open` records it)."""
        with suppress(ApiError):
            await self.state.open(task_id, -1, self.hold_ms)

    async def _local_batches(
        self, task_id: str, queue: asyncio.Queue[Batch | None], history: list[Batch], seen: int
    ) -> AsyncIterator[Batch]:
        try:
            for kept in history:
                yield kept
                seen = max(seen, kept.next - 1)
                if kept.final:
                    return
            while (live := await queue.get()) is not None:
                batch = live.after(seen)
                yield batch
                seen = max(seen, batch.next - 1)
                if batch.final:
                    return
            start, _ = await self.state.open(task_id, seen, self.hold_ms)  # the task left this instance
            async for rest in self.state.read(task_id, start, seen, _LOST):
                yield rest
        finally:
            self._unsubscribe(task_id, queue)

    def _unsubscribe(self, task_id: str, queue: asyncio.Queue[Batch | None] | None) -> None:
        readers = self._local.get(task_id)
        if readers is not None and queue is not None:
            readers.discard(queue)
            if not readers:
                del self._local[task_id]

    async def keep_reading(self, task_id: str) -> None:
        """While a reader is connected here: renew its presence, so the owner does not cancel the task."""
        while True:
            await asyncio.sleep(max(self.orch.hold_s / 3, 0.05))
            with suppress(ApiError):
                await self.state.reader_present(task_id, self.hold_ms)

    async def reader_left(self, task_id: str) -> None:
        """The owner cancels the task if no reader is back within `stream_hold_ms` from now."""
        with suppress(ApiError):
            await self.state.reader_present(task_id, self.hold_ms)

    # -- metrics ---------------------------------------------------------------------------------------------

    async def refresh_gauges(self) -> None:
        """The cluster gauges as Redis holds them now (on a Redis failure the last figures stay)."""
        for pool_id in self.orch.pools:
            try:
                depths, inflight = await self.state.gauges(pool_id)
            except ApiError as error:
                logger.debug("cluster gauges of pool %s: %s", pool_id, error.message)
                continue
            for priority, depth in depths.items():
                self.orch.metrics.set("cluster_queue_depth", depth, pool_id=pool_id, priority=priority)
            for replica_id, count in inflight.items():
                self.orch.metrics.set("cluster_inflight", count, pool_id=pool_id, replica_id=replica_id)

    # -- cancel ------------------------------------------------------------------------------------------------

    async def cancel(self, task_id: str, reason: CancelReason = "client") -> bool:
        """Cancel a task wherever it is; False when unknown. A queued task ends here; a running one on its owner."""
        task = await self.state.task(task_id)
        if not task:
            return False
        if task.get("state") == "done":
            return True
        if task.get("state") == "queued" and await self.state.unqueue(task_id, task["pool"], task["prio"]):
            await self.state.finish(task_id, [_canceled()])
            return True
        if task_id in self.orch.runs:
            self.orch.cancel(task_id, reason)
        await self.state.mark_cancel(task_id, reason)
        return True

    async def _listen(self) -> None:
        """Cancel and wake messages of every instance; reconnects while Redis is away."""
        while True:
            try:
                async with self.state.control() as messages:
                    async for message in messages.listen():
                        self._on_message(str(message["data"]))
            except (RedisError, OSError) as exc:
                logger.warning("control channel lost (%s); retrying", exc)
                await asyncio.sleep(0.5)

    def _on_message(self, message: str) -> None:
        kind, _, rest = message.partition(" ")
        if kind == "wake" and rest in self.orch.pools:
            self.wake(self.orch.pools[rest])
        elif kind == "cancel":
            task_id, _, text = rest.partition(" ")
            reason = cast(CancelReason, text) if text in _CANCEL_REASONS else "client"
            if task_id in self.orch.runs:
                self.orch.cancel(task_id, reason)
                return
            self._recent_cancels[task_id] = reason
            while len(self._recent_cancels) > _RECENT_CANCELS:
                self._recent_cancels.popitem(last=False)

    # -- leases, orphans, readers ------------------------------------------------------------------------------

    async def _keeper(self) -> None:
        """Renew this instance's lease; end the tasks of dead instances; cancel tasks nobody reads."""
        loop = asyncio.get_running_loop()
        period = min(_LEASE_EVERY_S / 2, max(self.orch.hold_s / 4, 0.05))
        renewed = 0.0
        while True:
            await asyncio.sleep(period)
            try:
                if loop.time() - renewed >= _LEASE_EVERY_S:
                    await self.state.renew_lease(self.instance, self.pools_digest)
                    renewed = loop.time()
                    if not self._pools_compared:
                        await self._compare_pools()
                    await self._end_orphans()
                await self._cancel_unread(loop.time())
            except ApiError as error:
                logger.warning("shared state: %s", error.message)

    async def _end_orphans(self) -> None:
        for task_id, owner in await self.state.orphans(self.instance):
            message = f"the orchestrator instance {owner} that ran the task died"
            if await self.state.end_orphan(task_id, owner, [error_event("INSTANCE_LOST", message, None)]):
                logger.warning("ended task %s of dead instance %s", task_id, owner, extra={"task_id": task_id})

    async def _cancel_unread(self, now: float) -> None:
        due = [r for r in self.orch.runs.values() if r.state != "done" and now - r.admitted_at >= self.orch.hold_s]
        if not due:
            return
        unread = await self.state.unread([r.task_id for r in due])
        for run in due:
            absent, was_read = unread[run.task_id]
            if absent:
                self.orch.cancel(run.task_id, "disconnect" if was_read else "slow_consumer")


def _replicas(pool: Pool) -> str:
    """The replicas as the admission scripts take them: this instance's view of readiness, each one's limit."""
    return json.dumps([[r.id, r.max_inflight, int(r.ready), int(not r.engine_queueing)] for r in pool.replicas])
