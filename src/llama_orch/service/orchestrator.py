"""The orchestrator without HTTP: admits tasks into pools, tracks every run until its terminal event has been read,
keeps sessions, health and metrics. It depends only on the adapter contract (`WorkerAdapter`)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable
from contextlib import suppress

from llama_orch_gen.contracts.capabilities import Capabilities, EngineCapability
from llama_orch_gen.contracts.config import OrchestratorConfig
from llama_orch_gen.contracts.events import TaskEvent
from llama_orch_gen.contracts.pool_health import PoolHealth, ReplicaHealth
from llama_orch_gen.contracts.task_request import TaskRequest

from llama_orch.adapters.base import AdapterRegistry
from llama_orch.errors import ApiError, ErrorCode
from llama_orch.service.metrics import Metrics
from llama_orch.service.pools import Pool, ReplicaState
from llama_orch.service.runs import CancelReason, TaskRun
from llama_orch.service.sessions import SessionStore

__all__ = ["API_VERSION", "Orchestrator"]

API_VERSION = "1.0.0"
MAX_TOKENS_OUT = 32768
_DELIVERY_S = 5.0  # after a drain, how long readers get to take their terminal events
logger = logging.getLogger("llama_orch.service")


class Orchestrator:
    def __init__(self, config: OrchestratorConfig, registry: AdapterRegistry, pool_class: type[Pool] = Pool) -> None:
        self.config = config
        self.registry = registry
        self.metrics = Metrics()
        self.instance_id = uuid.uuid4().hex[:12]  # this process's name among the instances of one orchestrator
        self.metrics.set(
            "instance_info", 1, instance_id=self.instance_id, state="redis" if config.state_url else "memory"
        )
        self.sessions = SessionStore(config.session_ttl_ms or 600_000, config.session_max_turns or 8)
        self.runs: dict[str, TaskRun] = {}
        self.hold_s = (config.stream_hold_ms if config.stream_hold_ms is not None else 60_000) / 1000.0
        self.buffer_events = config.stream_buffer_events or 1024
        self.health_interval_s = (config.health_interval_ms or 2000) / 1000.0
        self.pools: dict[str, Pool] = {
            pool.id: pool_class(
                pool,
                [ReplicaState(registry.get(pool.id, r.id), r) for r in pool.replicas],
                on_event=self._on_event,
                on_dropped=self._on_dropped,
            )
            for pool in config.pools
        }
        self._loops: list[asyncio.Task[None]] = []
        self.draining = False

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Probe every replica once (so the first task sees real readiness), then keep probing in the background."""
        await self._probe_all()
        loop = asyncio.get_running_loop()
        self._loops = [loop.create_task(self._health_loop()), loop.create_task(self._janitor_loop())]

    async def stop(self) -> None:
        for task in self._loops:
            task.cancel()
        with suppress(asyncio.CancelledError):
            await asyncio.gather(*self._loops)
        for pool in self.pools.values():
            await pool.aclose()
        await self.registry.aclose()

    async def drain(self, grace_s: float) -> None:
        """Admit nothing more; give running and queued tasks `grace_s` to finish, cancel the rest (each ends with
        its terminal event), and wait (briefly) until their readers have taken those events."""
        self.draining = True
        logger.info("draining: %d task(s) open, %gs grace", len(self.runs), grace_s)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while any(run.state != "done" for run in self.runs.values()) and loop.time() < deadline:
            await asyncio.sleep(0.05)
        for run in list(self.runs.values()):
            if run.state != "done":
                self.cancel(run.task_id, "shutdown")
        deadline = loop.time() + _DELIVERY_S
        while any(run.reader_attached for run in self.runs.values()) and loop.time() < deadline:
            await asyncio.sleep(0.05)

    async def _probe_all(self) -> None:
        timeout = max(self.health_interval_s, 1.0)
        await asyncio.gather(*(pool.probe(timeout) for pool in self.pools.values()))

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval_s)
            await self._probe_all()

    async def _janitor_loop(self) -> None:
        """Cancel tasks whose stream was never opened or whose reader left and did not resume, forget finished ones
        nobody read, expire sessions."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(1.0, max(self.hold_s / 4, 0.05)))
            now = loop.time()
            for run in list(self.runs.values()):
                if run.reader_attached or now - run.idle_since < self.hold_s:
                    continue
                if run.state == "done":
                    self.runs.pop(run.task_id, None)
                else:
                    self.cancel(run.task_id, run.idle_reason)
            self.sessions.sweep()

    # -- tasks -------------------------------------------------------------------------------------------------

    def submit(self, task: TaskRequest) -> TaskRun:
        """Admit a validated task or raise `ApiError` (and count the rejection)."""
        run, pool = self.prepare(task)
        try:
            pool.admit(run)
        except ApiError as error:
            self.count_rejection(error, pool.engine)
            raise
        self.runs[run.task_id] = run
        self.count_admission(run, pool)
        return run

    def resubmitted(self, task: TaskRequest) -> TaskRun | None:
        """The run that an identical earlier submit of `task` made, while it is kept. Retrying POST /v1/tasks is
        safe because of this: the repeat is answered with the first admission, never admitted twice (a different
        request under a kept task id is still refused by `prepare`)."""
        run = self.runs.get(task.task_id) if task.task_id is not None else None
        return run if run is not None and run.task == task else None

    def prepare(self, task: TaskRequest) -> tuple[TaskRun, Pool]:
        """The run of a task and the pool it goes to, before admission; or `ApiError` (counted)."""
        engine: str | None = task.engine  # the label of a rejection: the pool's engine once one is chosen
        try:
            if self.draining:
                raise ApiError("POOL_UNAVAILABLE", "the orchestrator is draining (shutting down)", retry_after_ms=1000)
            task = _checked(task)
            if task.task_id in self.runs:
                raise ApiError("INVALID_PARAMS", f"task {task.task_id!r} already exists", field="task_id")
            pool = self._choose_pool(task)
            engine = pool.engine
            self._check_limits(task, pool)
            run = TaskRun(
                task, pool.id, capacity=self.buffer_events, hold_s=self.hold_s, queue_position=0, predicted_ms=0
            )
            if task.session_id is not None:
                session = self.sessions.get(task.session_id)
                if session is not None and session.turns >= self.sessions.max_turns:
                    raise ApiError(
                        "INVALID_PARAMS",
                        f"session {task.session_id!r} used its {self.sessions.max_turns} turns",
                        field="session_id",
                    )
                if session is not None and session.pool_id == pool.id and task.kv_hint != "cold":
                    run.affinity = session.replica_id
        except ApiError as error:
            self.count_rejection(error, engine)
            raise
        return run, pool

    def count_admission(self, run: TaskRun, pool: Pool) -> None:
        self.metrics.inc(
            "tasks_enqueued_total",
            engine=pool.engine,
            engine_version=pool.engine_version(),
            pool_id=pool.id,
            replica_id="",  # not placed yet
            priority=run.priority,
        )
        logger.info(
            "admitted task %s",
            run.task_id,
            extra=_fields(run, queue_position=run.queue_position, predicted_start_ms=run.predicted_start_ms),
        )

    def count_rejection(self, error: ApiError, engine: str | None) -> None:
        engine = engine or "unknown"
        self.metrics.inc("tasks_rejected_total", engine=engine, reason=error.code)
        if error.policy_label is not None:
            self.metrics.inc("admission_backpressure_events_total", engine=engine, policy=error.policy_label)

    def _choose_pool(self, task: TaskRequest) -> Pool:
        placement = task.placement
        if placement is not None and placement.mode == "pin":
            if placement.pin_pool_id not in self.pools:
                raise ApiError(
                    "INVALID_PARAMS", f"no pool {placement.pin_pool_id!r} to pin to", field="placement.pin_pool_id"
                )
            return self._serving(task, [self.pools[placement.pin_pool_id]])[0]
        avoid = set(placement.avoid_pools or ()) if placement else set()
        candidates = [p for p in self.pools.values() if p.id not in avoid and task.engine in (None, p.engine)]
        if not candidates:
            raise ApiError("POOL_UNAVAILABLE", "no pool serves this engine/placement", retry_after_ms=1000)
        candidates = self._serving(task, candidates)
        prefer = list(placement.prefer_pools or ()) if placement else []
        session = self.sessions.get(task.session_id) if task.session_id else None
        if session is not None and session.pool_id is not None:
            prefer.insert(0, session.pool_id)

        def rank(pool: Pool) -> tuple[bool, int]:
            return (not pool.ready, prefer.index(pool.id) if pool.id in prefer else len(prefer))

        return min(candidates, key=rank)

    def _serving(self, task: TaskRequest, candidates: list[Pool]) -> list[Pool]:
        """The candidates that serve the task's `model_ref`; none is MODEL_NOT_SERVED unless the task explicitly
        allows another model."""
        if task.model_ref is None:
            return candidates
        serving = [pool for pool in candidates if task.model_ref in pool.models()]
        if serving or (task.placement is not None and task.placement.allow_fallback):
            return serving or candidates
        served = sorted({model for pool in candidates for model in pool.models()})
        raise ApiError(
            "MODEL_NOT_SERVED",
            f"no pool serves model {task.model_ref!r} (served: {', '.join(served) or 'none known'})",
            field="model_ref",
        )

    def _check_limits(self, task: TaskRequest, pool: Pool) -> None:
        ctx_max = max((r.ctx_size for r in pool.replicas if r.ctx_size), default=None)
        if task.ctx is not None and ctx_max is not None and task.ctx > ctx_max:
            raise ApiError("INVALID_PARAMS", f"ctx {task.ctx} exceeds the pool's context ({ctx_max})", field="ctx")

    def cancel(self, task_id: str, reason: CancelReason = "client") -> bool:
        """Cancel a queued or running task; False when unknown. Idempotent; a finished task stays finished."""
        run = self.runs.get(task_id)
        if run is None:
            return False
        if not run.cancel(reason):
            return True
        pool = self.pools[run.pool_id]
        if run.state == "queued" and pool.remove(run):
            run.fail_canceled(lambda event: self._on_queued_end(run, pool, event))
        else:
            asyncio.get_running_loop().create_task(run.deliver_cancel())
        return True

    def attach(self, task_id: str, seen: int = -1) -> TaskRun:
        """The one reader of a task's stream, reading the events after number `seen`."""
        run = self.runs.get(task_id)
        if run is None:
            raise ApiError("NOT_FOUND", f"no task {task_id!r}", task_id=task_id)
        if run.reader_attached and seen < 0:  # a reader that resumes (seen >= 0) takes over from the old one
            raise ApiError("CONFLICT", f"task {task_id!r} already has a reader", task_id=task_id)
        if not run.resumable(seen):
            raise ApiError("CONFLICT", f"the events of task {task_id!r} after {seen} are no longer kept")
        run.readers += 1
        run.had_reader = True
        return run

    def detach(self, run: TaskRun, *, resumable: bool) -> None:
        """The reader left. A resumable stream waits `hold_s` for the reader to come back (the janitor cancels it
        then); otherwise a task still going is canceled at once (its engine request closed) and forgotten."""
        run.readers -= 1
        run.idle_since = asyncio.get_running_loop().time()
        if resumable:
            return
        if run.state != "done":
            self.cancel(run.task_id, "disconnect")
        self.runs.pop(run.task_id, None)

    def delivered(self, run: TaskRun) -> None:
        """The reader got the terminal event: the task is forgotten."""
        if self.runs.get(run.task_id) is run:
            self.runs.pop(run.task_id)

    # -- accounting --------------------------------------------------------------------------------------------

    def _on_event(self, run: TaskRun, replica: ReplicaState, event: TaskEvent) -> None:
        root = event.root
        pool = self.pools[run.pool_id]
        labels = {"engine": pool.engine, "engine_version": replica.engine_version, "pool_id": pool.id}
        if root.event == "started":
            if root.data.engine_version:
                replica.engine_version = root.data.engine_version
                labels["engine_version"] = replica.engine_version
            self.metrics.inc("tasks_started_total", **labels, replica_id=replica.id, priority=run.priority)
            logger.info("started task %s", run.task_id, extra=_fields(run, replica=replica))
        elif root.event == "end":
            end = root.data
            tokens_in = end.tokens_in or 0
            self.metrics.inc("tokens_in_total", tokens_in, **labels, replica_id=replica.id)
            self.metrics.inc("tokens_out_total", end.tokens_out, **labels, replica_id=replica.id)
            if end.first_token_ms is not None:
                self.metrics.observe("latency_first_token_ms", end.first_token_ms, **labels, priority=run.priority)
                self.metrics.observe("latency_decode_ms", end.decode_time_ms, **labels, priority=run.priority)
            if end.finish_reason == "canceled":
                reason = run.cancel_reason or "client"
                self.metrics.inc("tasks_canceled_total", **labels, replica_id=replica.id, reason=reason)
            self._finished(run, replica.id, labels, "canceled" if end.finish_reason == "canceled" else "end")
            if run.task.session_id is not None:
                self.sessions.record_turn(
                    run.task.session_id, pool.id, replica.id, tokens_in + end.tokens_out, run.task.kv_hint == "reuse"
                )
            logger.info(
                "finished task %s",
                run.task_id,
                extra=_fields(
                    run,
                    replica=replica,
                    tokens_in=end.tokens_in,
                    tokens_out=end.tokens_out,
                    decode_time_ms=end.decode_time_ms,
                    first_token_ms=end.first_token_ms,
                    finish_reason=end.finish_reason,
                ),
            )
        elif root.event == "error":
            if root.data.code == "SLOW_CONSUMER":
                self.metrics.inc("tasks_canceled_total", **labels, replica_id=replica.id, reason="slow_consumer")
            # The engine never told its totals; count what was streamed.
            self.metrics.inc("tokens_out_total", run.tokens_emitted, **labels, replica_id=replica.id)
            self._finished(run, replica.id, labels, "error")
            logger.warning(
                "task %s failed: %s %s",
                run.task_id,
                root.data.code,
                root.data.message,
                extra=_fields(run, replica=replica, code=root.data.code),
            )

    def _finished(self, run: TaskRun, replica_id: str, labels: dict[str, str], outcome: str) -> None:
        self.metrics.inc("tasks_finished_total", **labels, replica_id=replica_id, outcome=outcome)
        if run.dropped_metrics:
            self.metrics.inc("sse_backpressure_drops_total", run.dropped_metrics, pool_id=run.pool_id)

    def _on_queued_end(self, run: TaskRun, pool: Pool, event: TaskEvent) -> None:
        labels = {"engine": pool.engine, "engine_version": pool.engine_version(), "pool_id": pool.id}
        self.metrics.inc("tasks_canceled_total", **labels, replica_id="", reason=run.cancel_reason or "client")
        self._finished(run, "", labels, "canceled")

    def _on_dropped(self, run: TaskRun, code: ErrorCode) -> None:
        pool = self.pools[run.pool_id]
        labels = {"engine": pool.engine, "engine_version": pool.engine_version(), "pool_id": pool.id}
        if code == "QUEUE_FULL_DROP_LRU":
            self.metrics.inc("admission_backpressure_events_total", engine=pool.engine, policy="drop-lru")
        self._finished(run, "", labels, "error")
        logger.warning("task %s left the queue: %s", run.task_id, code, extra=_fields(run, code=code))

    def refresh_gauges(self) -> None:
        for pool in self.pools.values():
            for lane, runs in pool.lanes.items():
                self.metrics.set(
                    "queue_depth",
                    len(runs),
                    engine=pool.engine,
                    engine_version=pool.engine_version(),
                    pool_id=pool.id,
                    priority=lane,
                )

    # -- discovery ---------------------------------------------------------------------------------------------

    def capabilities(self) -> Capabilities:
        return Capabilities(
            api_version=API_VERSION,
            engines=[
                EngineCapability(
                    engine=pool.engine,  # type: ignore[arg-type]
                    pool_id=pool.id,
                    engine_version=pool.engine_version() or None,
                    model=pool.config.model or next((r.config.model for r in pool.replicas if r.config.model), None),
                    ctx_max=max((r.ctx_size for r in pool.replicas if r.ctx_size), default=None),
                    max_tokens_out=MAX_TOKENS_OUT,
                    slots_total=_sum_known(r.slots_total for r in pool.replicas),
                    replicas=len(pool.replicas),
                    supported_workloads=["completion"],
                    sampler_profile_version=pool.config.sampler_profile_version or "v1",
                    queue_capacity=pool.capacity,
                )
                for pool in self.pools.values()
            ],
        )

    def pool_health(self, pool_id: str) -> PoolHealth:
        pool = self.pools.get(pool_id)
        if pool is None:
            raise ApiError("NOT_FOUND", f"no pool {pool_id!r}", pool_id=pool_id)
        replicas = [
            ReplicaHealth(
                replica_id=r.id,
                live=r.live,
                ready=r.ready,
                state=r.status.value,
                engine_version=r.engine_version or None,
                slots_total=r.slots_total,
                slots_free=r.slots_free,
                inflight=r.inflight,
                engine_running=None if r.engine_load is None else r.engine_load.running,
                engine_waiting=None if r.engine_load is None else r.engine_load.waiting,
                last_error=r.last_error,
            )
            for r in pool.replicas
        ]
        return PoolHealth(
            pool_id=pool.id,
            live=any(r.live for r in pool.replicas),
            ready=pool.ready,
            draining=self.draining,
            last_error=next((r.last_error for r in pool.replicas if r.last_error and not r.ready), None),
            queue_depth=pool.depth,
            replicas=replicas,
        )


def _checked(task: TaskRequest) -> TaskRequest:
    """Rules the schema cannot say; fills in the task id."""
    if (task.prompt is None) == (task.inputs is None):
        raise ApiError("INVALID_PARAMS", "exactly one of prompt or inputs is required", field="prompt")
    if task.workload not in (None, "completion"):
        raise ApiError("INVALID_PARAMS", f"workload {task.workload!r} is not supported", field="workload")
    if task.deadline_ms is not None and task.deadline_ms <= 0:
        raise ApiError("DEADLINE_UNMET", "deadline_ms must be > 0", field="deadline_ms")
    if task.task_id is None:
        task = task.model_copy(update={"task_id": str(uuid.uuid4())})
    return task


def _sum_known(values: Iterable[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _fields(run: TaskRun, *, replica: ReplicaState | None = None, **extra: object) -> dict[str, object]:
    """Structured log fields of a task (see `llama_orch.logs`)."""
    fields: dict[str, object] = {
        "task_id": run.task_id,
        "session_id": run.task.session_id,
        "pool_id": run.pool_id,
        "priority": run.priority,
    }
    if replica is not None:
        fields.update(engine=replica.adapter.engine, engine_version=replica.engine_version, replica_id=replica.id)
    fields.update(extra)
    return fields
