"""A pool: its replicas' health, its bounded two-lane admission queue, and dispatch to the least-loaded ready
replica. Everything here runs on the event loop without awaiting between a decision and its effect, so admission,
dispatch and cancel never race each other.

Scale-out is more engine replicas (engines addressed by URL, on any host); many orchestrator instances share
one queue and the replicas' slot counts in Redis through `SharedPool` (service/state/shared_pool.py).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from llama_orch_gen.contracts.config import PoolConfig, ReplicaConfig
from llama_orch_gen.contracts.events import TaskEvent

from llama_orch.adapters.base import EngineLoad, HealthState, WorkerAdapter
from llama_orch.errors import ApiError, EngineError, ErrorCode
from llama_orch.service.outliers import Outlier, OutlierPolicy
from llama_orch.service.runs import Attempt, TaskRun

__all__ = ["DEFAULT_MAX_INFLIGHT", "FULL_PROBE_EVERY", "Pool", "ReplicaState"]

logger = logging.getLogger("llama_orch.service")

FULL_PROBE_EVERY = 10  # health probes per capacity/version refresh
DEFAULT_MAX_INFLIGHT = 16  # engines that report no slot count (vLLM, TGI, Triton batch continuously)
_RETRY_AFTER_MS = 1000
_INITIAL_SERVICE_MS = 100.0  # predicted wait per queued task before any task has finished
_LANES = ("interactive", "batch")
_dispatch_order = itertools.count()


@dataclass(eq=False)
class ReplicaState:
    adapter: WorkerAdapter
    config: ReplicaConfig
    live: bool = False
    probed_ready: bool = False  # what the active probe last said; passive ejection is on top of it
    state: HealthState = HealthState.UNHEALTHY
    engine_version: str = ""
    model: str = ""  # as the engine reports it
    slots_total: int | None = None
    slots_free: int | None = None
    ctx_size: int | None = None
    inflight: int = 0
    engine_load: EngineLoad | None = None  # as the engine last reported it (every client's requests)
    foreign: int = 0  # of those, requests that are not ours (other clients of the same engine)
    _last_foreign: int = 0  # the previous probe's reading of `foreign`
    last_error: str | None = None
    last_code: str | None = None  # contract code of `last_error`
    last_dispatch: int = 0
    probes: int = 0
    outlier: Outlier = field(default_factory=Outlier)

    @property
    def id(self) -> str:
        return self.adapter.replica_id

    @property
    def ready(self) -> bool:
        return self.probed_ready and not self.outlier.ejected(time.monotonic())

    @property
    def status(self) -> HealthState:
        return HealthState.UNHEALTHY if self.outlier.ejected(time.monotonic()) else self.state

    @property
    def max_inflight(self) -> int:
        if self.config.id_slot is not None:
            return 1  # every task runs in the one pinned slot: more would only queue inside the engine
        return self.config.max_inflight or self.slots_total or DEFAULT_MAX_INFLIGHT

    @property
    def load(self) -> int:
        """Requests on the engine now: ours, counted live, plus other clients' as of the last probe."""
        return self.inflight + self.foreign

    @property
    def engine_queueing(self) -> bool:
        """The engine already holds requests waiting (it is full, whoever sent them)."""
        return self.engine_load is not None and self.engine_load.waiting > 0

    @property
    def has_room(self) -> bool:
        return self.ready and not self.engine_queueing and self.load < self.max_inflight

    async def probe(self, timeout_s: float) -> None:
        """Ask the health route; capacity and version only when the replica becomes ready and on every
        `FULL_PROBE_EVERY`-th probe, so the periodic probe is one cheap call (readiness changes are logged)."""
        was_ready = self.ready
        full = not self.probed_ready or self.probes % FULL_PROBE_EVERY == 0
        self.probes += 1
        try:
            async with asyncio.timeout(timeout_s):
                health = await self.adapter.health()
                if health.ready and full:
                    props = await self.adapter.props()
                    self.slots_total, self.slots_free, self.ctx_size = (
                        props.slots_total,
                        props.slots_free,
                        props.ctx_size,
                    )
                    version = await self.adapter.engine_version()
                    self.engine_version, self.model = version.version, version.model or ""
        except (EngineError, TimeoutError) as exc:
            message = exc.message if isinstance(exc, EngineError) else f"no health answer within {timeout_s:g}s"
            self.live, self.probed_ready, self.state, self.last_error = False, False, HealthState.UNHEALTHY, message
            self.last_code = exc.code if isinstance(exc, EngineError) else "POOL_UNAVAILABLE"
        else:
            self.live, self.probed_ready, self.state = health.live, health.ready, health.state
            if health.ready:
                await self._read_load(timeout_s)
            if health.ready and self.slots_free == 0:
                self.state = HealthState.DEGRADED
            if health.detail and not health.ready:
                self.last_error, self.last_code = health.detail, health.code
        if was_ready != self.ready:
            logger.info(
                "replica %s/%s is %s",
                self.adapter.pool_id,
                self.id,
                "ready" if self.ready else f"unready: {self.last_error}",
                extra={"pool_id": self.adapter.pool_id, "replica_id": self.id},
            )

    async def _read_load(self, timeout_s: float) -> None:
        """The engine's own count, where it reports one; an unreadable count is no reason to unready the replica."""
        try:
            async with asyncio.timeout(timeout_s):
                self.engine_load = await self.adapter.load()
        except (EngineError, TimeoutError):
            self.engine_load = None
        reading = 0
        if self.engine_load is not None:
            reading = max(0, self.engine_load.running + self.engine_load.waiting - self.inflight)
        # A task just sent may not be in the engine's count yet (a request on its way, a gauge one scrape behind):
        # other clients' load drops only when two readings in a row say so.
        self.foreign, self._last_foreign = max(reading, self._last_foreign), reading


@dataclass(eq=False)
class Pool:
    config: PoolConfig
    replicas: list[ReplicaState]
    on_event: Callable[[TaskRun, ReplicaState, TaskEvent], None]
    on_dropped: Callable[[TaskRun, ErrorCode], None]  # a queued run ended by the pool, and its error code
    lanes: dict[str, deque[TaskRun]] = field(default_factory=lambda: {lane: deque() for lane in _LANES})
    outliers: OutlierPolicy = field(init=False)
    service_ms: float = _INITIAL_SERVICE_MS  # moving average of dispatch→terminal, for predicted_start_ms
    _running: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.outliers = OutlierPolicy.from_config(self.config.outlier_detection)

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def engine(self) -> str:
        return self.config.engine

    @property
    def capacity(self) -> int:
        return self.config.queue.capacity if self.config.queue and self.config.queue.capacity else 8

    @property
    def policy(self) -> str:
        return self.config.queue.policy if self.config.queue and self.config.queue.policy else "reject"

    @property
    def depth(self) -> int:
        return sum(len(lane) for lane in self.lanes.values())

    @property
    def ready(self) -> bool:
        return any(r.ready for r in self.replicas)

    def models(self) -> set[str]:
        """The models the pool serves: configured, and as its engines report them."""
        names = {self.config.model} | {r.config.model for r in self.replicas} | {r.model for r in self.replicas}
        return {name for name in names if name}

    def engine_version(self) -> str:
        """The version label of pool-level metrics: the first known replica version."""
        return next((r.engine_version for r in self.replicas if r.engine_version), "")

    # -- admission ---------------------------------------------------------------------------------------------

    def admit(self, run: TaskRun) -> None:
        """Queue `run` (or refuse it with `ApiError`) and dispatch whatever can start now."""
        self.check_ready()
        if self.depth >= self.capacity and not self._room_now():
            # drop-lru evicts the oldest task of the newcomer's rank or lower, never one that outranks it.
            victims = self.lanes["batch"] or (self.lanes["interactive"] if run.priority == "interactive" else None)
            if self.policy == "reject" or not victims:
                raise self.full(self.depth)
            victim = victims.popleft()
            self._drop(victim, "QUEUE_FULL_DROP_LRU", "dropped from a full queue (drop-lru) for a newer task")
        ahead = len(self.lanes["interactive"]) + (len(self.lanes["batch"]) if run.priority == "batch" else 0)
        run.queue_position = ahead
        run.predicted_start_ms = self.predict_ms(ahead)
        self.lanes[run.priority].append(run)
        self.dispatch()
        self._arm_expiry(run)

    def check_ready(self) -> None:
        """Refuse with `ApiError` when no replica is ready."""
        if self.ready:
            return
        errors = "; ".join(f"{r.id}: {r.last_error}" for r in self.replicas if r.last_error)
        # Every replica refusing our credentials is a configuration fault, not a wait-and-retry condition.
        auth = all(r.last_code == "UPSTREAM_AUTH" for r in self.replicas)
        raise ApiError(
            "UPSTREAM_AUTH" if auth else "POOL_UNREADY",
            f"pool {self.id!r} has no ready replica" + (f" ({errors})" if errors else ""),
            retry_after_ms=_RETRY_AFTER_MS,
            pool_id=self.id,
        )

    def full(self, depth: int) -> ApiError:
        """The refusal of a newcomer to a full queue (`depth` tasks waiting)."""
        return ApiError(
            "ADMISSION_REJECT",
            f"pool {self.id!r} queue is full ({self.capacity} waiting)",
            retry_after_ms=max(_RETRY_AFTER_MS, self.predict_ms(depth)),
            policy_label=self.policy,
            pool_id=self.id,
        )

    def _arm_expiry(self, run: TaskRun) -> None:
        if run.state == "queued" and run.deadline_at is not None:
            run.expiry = asyncio.get_running_loop().call_at(run.deadline_at, self._expire, run)

    def _drop(self, run: TaskRun, code: ErrorCode, message: str) -> None:
        """End a run the pool took out of its queue; it never held a slot."""
        if run.expiry is not None:
            run.expiry.cancel()
        run.fail(code, message, _ignore)
        self.on_dropped(run, code)

    def _expire(self, run: TaskRun) -> None:
        if self.remove(run):
            self._drop(run, "DEADLINE_UNMET", "the task deadline passed while it waited in the queue")

    def _room_now(self) -> bool:
        return self.depth == 0 and any(r.has_room for r in self.replicas)

    def predict_ms(self, ahead: int) -> int:
        if ahead == 0 and any(r.has_room for r in self.replicas):
            return 0
        slots = sum(r.max_inflight for r in self.replicas if r.ready) or 1
        return int((ahead + 1) * self.service_ms / slots)

    def remove(self, run: TaskRun) -> bool:
        """Take a queued run out of its lane (cancel before dispatch)."""
        lane = self.lanes[run.priority]
        if run in lane:
            lane.remove(run)
            return True
        return False

    # -- dispatch ----------------------------------------------------------------------------------------------

    def dispatch(self) -> None:
        """Start queued runs, interactive first, each on the least-loaded ready replica with room."""
        now = asyncio.get_running_loop().time()
        for lane in self.lanes.values():
            for run in list(lane):
                if run.expired(now):  # its timer is due but has not run yet: never give it a slot
                    self._expire(run)
                    continue
                replica = self._pick(run)
                if replica is None:
                    if not any(r.has_room for r in self.replicas):
                        return
                    continue  # this run waits for its own replica (session affinity); others may go
                lane.remove(run)
                self.start(run, replica)

    def start(self, run: TaskRun, replica: ReplicaState) -> None:
        """Run `run` on `replica`, whose slot it now holds."""
        if run.expiry is not None:
            run.expiry.cancel()
        replica.inflight += 1
        replica.last_dispatch = next(_dispatch_order)
        job = asyncio.get_running_loop().create_task(self._execute(run, replica))
        self._running.add(job)
        job.add_done_callback(self._running.discard)

    def _pick(self, run: TaskRun) -> ReplicaState | None:
        candidates = [r for r in self.replicas if r.has_room and r.id not in run.tried]
        affinity = run.affinity
        if affinity is not None:
            sticky = next((r for r in self.replicas if r.id == affinity and r.ready), None)
            if sticky is not None and run.task.kv_hint == "reuse":
                return sticky if sticky in candidates else None  # wait for the replica that holds the cache
            if sticky in candidates:
                return sticky
        return min(candidates, key=lambda r: (r.load / r.max_inflight, r.last_dispatch), default=None)

    async def _execute(self, run: TaskRun, replica: ReplicaState) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()

        def relay(event: TaskEvent) -> None:
            if event.root.event == "started":
                self._started(run, replica)
            self.on_event(run, replica, event)

        try:
            attempt = await run.execute(replica.adapter, relay)
        except Exception:  # a bug: the task still ends, with its one terminal event, and the slot is freed
            logger.exception("task %s failed inside the orchestrator", run.task_id, extra={"task_id": run.task_id})
            run.fail("INTERNAL", "internal error; see the orchestrator's log", relay)
            attempt = Attempt()
        finally:
            replica.inflight -= 1
        await self.freed(run, replica)
        if attempt.failed_before_start is None:
            self.service_ms = 0.8 * self.service_ms + 0.2 * (loop.time() - began) * 1000.0
        else:
            self._retry_elsewhere(run, replica, attempt.failed_before_start)
        self.dispatch()

    def _started(self, run: TaskRun, replica: ReplicaState) -> None:
        """`replica` started `run`: the replicas that failed it before were at fault, not the request."""
        replica.outlier.succeeded()
        for other in self.replicas:
            if other.id in run.tried:
                self._count_failure(other, run.tried[other.id])

    def _count_failure(self, replica: ReplicaState, error: EngineError) -> None:
        now = time.monotonic()
        ejected = sum(r.outlier.ejected(now) for r in self.replicas)
        others_ready = sum(r.ready for r in self.replicas if r is not replica)
        may_eject = self.outliers.may_eject(len(self.replicas), ejected, others_ready)
        failures = replica.outlier.consecutive + 1
        duration = replica.outlier.failed(now, self.outliers, may_eject=may_eject)
        if duration is None:
            return
        replica.last_error = f"ejected for {duration:g}s after {failures} consecutive failures; last: {error.message}"
        replica.last_code = error.code
        logger.warning(
            "replica %s/%s %s",
            self.id,
            replica.id,
            replica.last_error,
            extra={"pool_id": self.id, "replica_id": replica.id},
        )

    def _retry_elsewhere(self, run: TaskRun, replica: ReplicaState, error: EngineError) -> None:
        """The engine never started the task: give it to another replica. Whose fault it was is known only once
        another replica starts it (`_started`); a task every replica fails is the request's own fault."""
        run.tried[replica.id] = error
        logger.warning(
            "replica %s/%s failed task %s before starting it: %s",
            self.id,
            replica.id,
            run.task_id,
            error.message,
            extra={"task_id": run.task_id, "pool_id": self.id, "replica_id": replica.id},
        )
        if run.cancel_reason is None and any(r.ready and r.id not in run.tried for r in self.replicas):
            run.state = "queued"
            self.requeue(run)
            return
        if len(run.tried) > 1:
            message = f"every replica of pool {self.id!r} failed ({len(run.tried)} tried); last: {error.message}"
            run.fail("REPLICA_EXHAUSTED", message, lambda event: self.on_event(run, replica, event))
        else:
            run.fail(error.code, error.message, lambda event: self.on_event(run, replica, event))

    async def freed(self, run: TaskRun, replica: ReplicaState) -> None:
        """`run` gave its slot on `replica` back (counted in `replica.inflight` here; `SharedPool` counts it in
        Redis too)."""

    def requeue(self, run: TaskRun) -> None:
        """A run no replica started goes back first in its lane."""
        self.lanes[run.priority].appendleft(run)
        self._arm_expiry(run)

    # -- health ------------------------------------------------------------------------------------------------

    async def probe(self, timeout_s: float) -> None:
        await asyncio.gather(*(r.probe(timeout_s) for r in self.replicas))
        self.dispatch()  # readiness may have changed, by the probe or by an ejection that ended

    def queued(self) -> Iterator[TaskRun]:
        for lane in self.lanes.values():
            yield from lane

    async def aclose(self) -> None:
        for job in list(self._running):
            job.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)


def _ignore(_event: TaskEvent) -> None:
    """Events of a run dropped from the queue are accounted by `Pool.on_dropped`."""
