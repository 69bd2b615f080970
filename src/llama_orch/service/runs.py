"""One admitted task, from admission to its terminal event: the bounded buffer between the engine and the one
reader of its stream, race-free cancel, and the guarantee of exactly one terminal event.

Buffer policy (per task, so a slow client never stalls another task's stream): up to `capacity` events (and at
most one engine read's tokens more) wait for the reader. When the buffer is full, `metrics` events are dropped
and the engine is read no faster than the client (tokens are never dropped). If the reader makes no progress for
`hold_s` (or never opens the stream), the engine request is canceled and the task ends with `error`
SLOW_CONSUMER, so an idle client never holds an engine slot.

Every event has a number in the task's stream (the SSE `id:`). Events already read stay kept (up to `capacity`
of them), so a reader that lost its connection resumes after the last number it saw; a reader that leaves and
does not come back within `hold_s` has its task canceled (the orchestrator's janitor does that).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Literal

from llama_orch_gen.contracts.events import End, Started, TaskEvent
from llama_orch_gen.contracts.task_request import TaskRequest

from llama_orch import events
from llama_orch.adapters.base import WorkerAdapter
from llama_orch.errors import EngineError, ErrorCode
from llama_orch.events import TokenRun
from llama_orch.service.state.batch import Batch, Item, size

__all__ = ["Attempt", "CancelReason", "TaskRun", "error_event"]

logger = logging.getLogger("llama_orch.service")

State = Literal["queued", "running", "done"]
CancelReason = Literal["client", "disconnect", "slow_consumer", "shutdown"]

# Failures of an engine that never started the task: the pool may try another replica.
_REDISPATCHABLE: frozenset[str] = frozenset({"POOL_UNAVAILABLE", "POOL_UNREADY", "WORKER_RESET"})


@dataclass(frozen=True, slots=True)
class Attempt:
    """How one dispatch ended. `failed_before_start` holds the error when the engine never started the task (the
    pool may try another replica); the stream has then seen nothing of this attempt."""

    failed_before_start: EngineError | None = None


class TaskRun:
    __slots__ = (
        "task",
        "task_id",
        "pool_id",
        "priority",
        "admitted_at",
        "deadline_at",
        "expiry",
        "queue_position",
        "predicted_start_ms",
        "state",
        "adapter",
        "terminal",
        "readers",
        "_reader_epoch",
        "had_reader",
        "idle_since",
        "dropped_metrics",
        "_buffer",
        "_buffer_first",
        "_next",
        "_kept",
        "_kept_events",
        "_pending",
        "_capacity",
        "_hold_s",
        "_readable",
        "_space",
        "_cancel",
        "_cancel_sent",
        "tried",
        "affinity",
        "tokens_emitted",
    )

    def __init__(
        self,
        task: TaskRequest,
        pool_id: str,
        *,
        capacity: int,
        hold_s: float,
        queue_position: int,
        predicted_ms: int,
        admitted_at: float | None = None,  # event-loop time; default now (another instance may have admitted it)
    ) -> None:
        self.task = task
        self.task_id: str = task.task_id or ""
        self.pool_id = pool_id
        self.priority: str = task.priority or "interactive"
        self.admitted_at = asyncio.get_running_loop().time() if admitted_at is None else admitted_at
        # End-to-end from admission: time in the queue counts against the task's deadline.
        self.deadline_at = None if task.deadline_ms is None else self.admitted_at + task.deadline_ms / 1000.0
        self.expiry: asyncio.TimerHandle | None = None  # ends the run if its deadline passes in the queue
        self.queue_position = queue_position
        self.predicted_start_ms = predicted_ms
        self.state: State = "queued"
        self.adapter: WorkerAdapter | None = None
        self.terminal: TaskEvent | None = None
        self.readers = 0  # connections reading the stream; a resuming one takes over from one not yet seen gone
        self._reader_epoch = 0
        self.had_reader = False
        self.idle_since = self.admitted_at  # since when no reader is attached
        self.dropped_metrics = 0
        self._buffer: deque[Item] = deque()  # not read yet
        self._buffer_first = 0  # the number of the buffer's first event
        self._next = 0  # the number of the next event
        self._kept: deque[tuple[int, Item]] = deque()  # read, kept for a reader that resumes
        self._kept_events = 0
        self._pending = 0  # events in the buffer (a TokenRun counts its tokens)
        self._capacity = capacity
        self._hold_s = hold_s
        self._readable = asyncio.Event()
        self._space = asyncio.Event()
        self._cancel: CancelReason | None = None
        self._cancel_sent = False
        self.tried: dict[str, EngineError] = {}  # replicas that failed this task before starting it, and how
        self.tokens_emitted = 0
        self.affinity: str | None = None  # the replica of the task's session, if it has one

    # -- producer side -----------------------------------------------------------------------------------------

    async def execute(self, adapter: WorkerAdapter, on_event: Callable[[TaskEvent], None]) -> Attempt:
        """Relay the adapter's stream into the buffer. Never raises; `on_event` sees every event kept but tokens
        (counted in `tokens_emitted`)."""
        self.state = "running"
        self.adapter = adapter
        if self._cancel is not None:  # canceled between dispatch and now: the engine was never asked
            self._finish(self._canceled_terminal(None), on_event)
            return Attempt()
        relayed = adapter.relay(self._engine_task())
        started = False
        try:
            async for item in relayed:
                if isinstance(item, TokenRun):  # the hot path: buffered and counted, nothing else to account
                    await self._push(item, len(item.texts))
                    self.tokens_emitted += len(item.texts)
                else:
                    root = item.root
                    if root.event == "started":
                        started = True
                        item = self._with_queue_facts(root.data)
                    elif root.event in ("end", "error"):
                        if not started and root.event == "error" and root.data.code in _REDISPATCHABLE:
                            return Attempt(failed_before_start=_as_engine_error(root.data))
                        if self._cancel is not None and root.event == "end":
                            item = self._canceled_terminal(root.data)
                        self._finish(item, on_event)
                        return Attempt()
                    elif root.event == "metrics" and self._pending >= self._capacity:
                        self.dropped_metrics += 1
                        continue
                    await self._push(item, 1)
                    _account(on_event, item)
                if self._cancel is not None and not self._cancel_sent:
                    await self._send_cancel()
        finally:
            await relayed.aclose()
        # An adapter never ends without a terminal event; if one ever does, the stream still gets one.
        self._finish(
            error_event("INTERNAL", "the adapter ended the stream without a terminal event", adapter), on_event
        )
        return Attempt()

    def _engine_task(self) -> TaskRequest:
        """The task as the engine gets it: with only the time left of its deadline."""
        if self.deadline_at is None:
            return self.task
        left_ms = (self.deadline_at - asyncio.get_running_loop().time()) * 1000.0
        return self.task.model_copy(update={"deadline_ms": max(1, int(left_ms))})

    def expired(self, now: float) -> bool:
        return self.deadline_at is not None and now >= self.deadline_at

    async def _push(self, item: TaskEvent | TokenRun, events: int) -> None:
        """Buffer `item` (worth `events` events) once there is room: the bound is checked before each item, so it
        is exceeded by at most one engine read's tokens."""
        while self._pending >= self._capacity:
            self._space.clear()
            try:
                async with asyncio.timeout(self._hold_s):
                    await self._space.wait()
            except TimeoutError:
                self.cancel(self.idle_reason)
                await self._send_cancel()
                break  # the relay ends at its next step; the terminal event bypasses the bound
        self._buffer.append(item)
        self._pending += events
        self._next += events
        self._readable.set()

    def _finish(self, terminal: TaskEvent, on_event: Callable[[TaskEvent], None]) -> None:
        self.state = "done"
        self.terminal = terminal
        self._buffer.append(terminal)
        self._next += 1
        self._readable.set()
        _account(on_event, terminal)

    def fail(self, code: ErrorCode, message: str, on_event: Callable[[TaskEvent], None]) -> None:
        """End a task that cannot run (dropped from the queue, no replica left) with an `error` event."""
        if self.state != "done":
            self._finish(error_event(code, message, self.adapter), on_event)

    def fail_canceled(self, on_event: Callable[[TaskEvent], None]) -> None:
        """End a run canceled while it waited in the queue: the engine was never asked."""
        if self.state != "done":
            self._finish(self._canceled_terminal(None), on_event)

    # -- cancel ------------------------------------------------------------------------------------------------

    def cancel(self, reason: CancelReason) -> bool:
        """Ask for the task to stop; returns False when it already ended. A queued task is ended by the pool."""
        if self.state == "done":
            return False
        if self._cancel is None:
            self._cancel = reason
        return True

    @property
    def cancel_reason(self) -> str | None:
        return self._cancel

    @property
    def reader_attached(self) -> bool:
        return self.readers > 0

    @property
    def idle_reason(self) -> CancelReason:
        """Why a task nobody reads is canceled: its reader left (and did not resume), or it never read or stalled."""
        return "disconnect" if self.had_reader and not self.reader_attached else "slow_consumer"

    async def _send_cancel(self) -> None:
        if self.adapter is not None and not self._cancel_sent:
            self._cancel_sent = await self.adapter.cancel(self.task_id)

    async def deliver_cancel(self) -> None:
        """Called after `cancel` on a running task: interrupts the engine call now, not at the next event."""
        if self.state == "running":
            await self._send_cancel()

    def _canceled_terminal(self, end: End | None) -> TaskEvent:
        if self._cancel == "slow_consumer":
            return error_event(
                "SLOW_CONSUMER", f"the stream was not read for {self._hold_s:g}s; the task was canceled", self.adapter
            )
        return events.end(end or End.model_construct(tokens_out=0, decode_time_ms=0.0, finish_reason="canceled"))

    def _with_queue_facts(self, started: Started) -> TaskEvent:
        data = started.model_copy(
            update={"queue_position": self.queue_position, "predicted_start_ms": self.predicted_start_ms}
        )
        return events.started(data)

    # -- reader side -------------------------------------------------------------------------------------------

    def resumable(self, seen: int) -> bool:
        """Whether every event after number `seen` is still here (-1: from the first event)."""
        oldest = self._kept[0][0] if self._kept else self._buffer_first
        return seen + 1 >= oldest

    async def batches(self, seen: int = -1) -> AsyncIterator[Batch]:
        """The events after number `seen`, as they arrive, in batches (one write per batch); ends after the
        terminal event. The kept events come first to a reader that resumes. A newer call takes over: this one
        then ends (its connection is one the client already left)."""
        self._reader_epoch += 1
        epoch = self._reader_epoch
        if self._kept and self._kept[-1][0] + size(self._kept[-1][1]) > seen + 1:
            yield Batch(self._kept[0][0], [item for _, item in self._kept], False).after(seen)
        while True:
            await self._readable.wait()
            if epoch != self._reader_epoch:
                return
            batch = Batch(
                self._buffer_first, list(self._buffer), bool(self._buffer) and self._buffer[-1] is self.terminal
            )
            self._keep(batch)
            self._buffer.clear()
            self._buffer_first = self._next
            self._pending = 0
            self._readable.clear()
            self._space.set()
            yield batch.after(seen)
            if batch.final:
                return

    def _keep(self, batch: Batch) -> None:
        number = batch.first
        for item in batch.items:
            self._kept.append((number, item))
            number += size(item)
            self._kept_events += size(item)
        while self._kept and self._kept_events - size(self._kept[0][1]) >= self._capacity:
            self._kept_events -= size(self._kept.popleft()[1])


def _account(on_event: Callable[[TaskEvent], None], event: TaskEvent) -> None:
    """Accounting (metrics, logs, sessions) never decides a task's stream: a bug there is logged, not raised."""
    try:
        on_event(event)
    except Exception:
        logger.exception("accounting failed for a %s event", event.root.event)


def error_event(code: ErrorCode, message: str, adapter: WorkerAdapter | None) -> TaskEvent:
    error = EngineError(code, message)
    return events.error(error.to_stream_error(None if adapter is None else adapter.engine))


def _as_engine_error(data: Any) -> EngineError:
    return EngineError(data.code, data.message, retriable=data.retriable, retry_after_ms=data.retry_after_ms)
