"""The shared relay: one engine stream in, one contract event stream out, whatever the engine does.

`StreamingAdapter` implements `submit` and `cancel` once for every adapter. An engine adapter only says how to
open its stream (`_open`) and what one stream item means (`_read`); the relay here

- opens the stream through the one retry loop (before the first token only),
- bounds the first item by the first-token timeout, each later item by the inter-token timeout, all by the deadline,
- emits `started`, then `token` events with `i` contiguous from 0, then exactly one `end` or `error`,
- turns every failure into a typed `error` event (never an exception out of `submit`, never a silent `end`),
- closes the engine response promptly when the task is canceled or the consumer stops iterating.
"""

from __future__ import annotations

import asyncio
import logging
import math
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from llama_orch_gen.contracts.events import End, Metrics, Started, TaskEvent
from llama_orch_gen.contracts.task_request import TaskRequest

from llama_orch import events
from llama_orch.adapters.base import EngineLoad, EngineProps, EngineVersion, Health
from llama_orch.adapters.http_policy import HttpPolicy, error_for_exception, with_retries
from llama_orch.determinism import effective_seed
from llama_orch.errors import EngineError
from llama_orch.events import TokenRun

__all__ = ["EngineStream", "FinishReason", "StreamingAdapter", "Tally"]

logger = logging.getLogger("llama_orch.adapters")

FinishReason = Literal["stop", "length", "canceled"]
# After the engine's final item, how long the relay waits for what may follow it (a usage chunk, `[DONE]`).
_TAIL_S = 1.0


class EngineStream(Protocol):
    """An open engine stream: its decoded items in batches, as they arrive; `aclose` releases the connection."""

    def batches(self) -> AsyncIterator[list[Any]]: ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class Tally:
    """What the engine reported about the whole task while streaming; `_read` fills it, `end` uses it.
    `max_tokens` is the task's limit, for engines that report no finish reason (Triton)."""

    max_tokens: int | None = None
    finish_reason: FinishReason | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    decode_ms: float | None = None


class _Run:
    """Cancel handle of one running task. `worker` is the task executing the relay while it awaits the engine
    (None while the relay is suspended at a `yield`, where the flag alone is enough)."""

    __slots__ = ("canceled", "worker")

    def __init__(self) -> None:
        self.canceled = False
        self.worker: asyncio.Task[Any] | None = None

    def cancel(self) -> None:
        """Idempotent: a second `Task.cancel()` would outlive the relay's one `uncancel()` and lose the terminal."""
        if self.canceled:
            return
        self.canceled = True
        if self.worker is not None:
            self.worker.cancel()


class _Canceled(Exception):
    """Internal: the task was canceled through `cancel(task_id)`."""


class StreamingAdapter(ABC):
    """Base of every adapter (see the module docstring). Subclasses set `engine` and implement the hooks."""

    engine: str

    def __init__(self, pool_id: str, replica_id: str, *, policy: HttpPolicy, model: str | None = None) -> None:
        self.pool_id = pool_id
        self.replica_id = replica_id
        self.model = model
        self.policy = policy
        self._runs: dict[str, _Run] = {}

    # -- hooks -------------------------------------------------------------------------------------------------

    @abstractmethod
    async def _open(self, task: TaskRequest, seed: int) -> EngineStream:
        """Send the task to the engine; raise for a refusal (the relay classifies and maybe retries it)."""

    @abstractmethod
    def _read(self, item: Any, tally: Tally) -> str:
        """One decoded stream item → the token text it carries ("" for none); record totals in `tally`;
        raise `EngineError` for an in-stream error payload."""

    def _classify(self, exc: BaseException) -> EngineError:
        """Any failure → a contract error; adapters override it to read their engine's status error bodies."""
        return error_for_exception(exc)

    @abstractmethod
    async def engine_version(self) -> EngineVersion: ...

    @abstractmethod
    async def health(self) -> Health: ...

    @abstractmethod
    async def props(self) -> EngineProps: ...

    async def load(self) -> EngineLoad | None:
        """Engines that report their own queue override this; the others are counted by the tasks we placed."""
        return None

    @abstractmethod
    async def aclose(self) -> None: ...

    async def _stream_version(self) -> EngineVersion:
        """The identity `started` carries; an unreachable engine is "unknown" here (the open will fail anyway)."""
        try:
            return await self.engine_version()
        except EngineError:
            return EngineVersion(engine=self.engine, version="unknown", model=self.model)

    # -- the contract ------------------------------------------------------------------------------------------

    async def cancel(self, task_id: str) -> bool:
        run = self._runs.get(task_id)
        if run is None:
            return False
        run.cancel()
        return True

    async def submit(self, task: TaskRequest) -> AsyncIterator[TaskEvent]:
        relayed = self.relay(task)
        try:
            async for item in relayed:
                if isinstance(item, TokenRun):
                    for event in item.events():
                        yield event
                else:
                    yield item
        finally:
            await relayed.aclose()  # closing this iterator early closes the engine stream now, not at GC

    async def relay(self, task: TaskRequest) -> AsyncGenerator[TaskEvent | TokenRun, None]:
        task_id = task.task_id or ""
        run = _Run()
        self._runs[task_id] = run
        loop = asyncio.get_running_loop()
        dispatched = loop.time()
        deadline = math.inf if task.deadline_ms is None else dispatched + task.deadline_ms / 1000.0
        seed = effective_seed(task)
        tally = Tally(max_tokens=task.max_tokens)
        stream: EngineStream | None = None
        batches: AsyncIterator[list[Any]] | None = None
        index = 0
        first_token_at: float | None = None
        version: EngineVersion | None = None
        terminal: TaskEvent
        worker = _enter(run)
        base = worker.cancelling()
        try:
            if task.deadline_ms is not None and task.deadline_ms <= 0:
                raise EngineError("DEADLINE_UNMET", "deadline_ms must be > 0")
            version = await self._stream_version()
            opened, first_item_due = await with_retries(
                lambda: self._attempt(task, seed, deadline), self._classify, self.policy, deadline=deadline
            )
            stream, batches = opened, opened.batches()
            run.worker = None
            yield _started(task, seed, self, version)
            due = first_item_due
            while True:
                worker = _enter(run)
                base = worker.cancelling()
                try:
                    # One timer per network read, not per token: a fast engine delivers many tokens per read.
                    async with asyncio.timeout_at(min(due, deadline)):
                        batch = await anext(batches)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    if tally.finish_reason is None:
                        raise
                    break  # the final item came: what may follow it (usage, `[DONE]`) is given up
                run.worker = None
                texts, failure = self._texts(batch, tally)
                if texts:
                    if first_token_at is None:
                        first_token_at = loop.time()
                    yield TokenRun(index, texts)
                    index += len(texts)
                    if run.canceled:
                        raise _Canceled
                    due = loop.time() + self.policy.inter_token_s
                if failure is not None:
                    raise failure
                if tally.finish_reason is not None:
                    due = min(due, loop.time() + _TAIL_S)
            terminal = _end(tally, index, dispatched, first_token_at, loop.time(), version, tally.finish_reason)
        except _Canceled:
            terminal = _end(tally, index, dispatched, first_token_at, loop.time(), version, "canceled")
        except asyncio.CancelledError:
            if not (run.canceled and worker.uncancel() <= base):
                raise  # not our cancel: the consumer's task itself is being canceled
            terminal = _end(tally, index, dispatched, first_token_at, loop.time(), version, "canceled")
        except TimeoutError:
            timeout = self._timeout_error(loop.time() >= deadline, first_token_at is None)
            terminal = events.error(timeout.to_stream_error(self.engine))
        except Exception as exc:  # every failure becomes the one terminal event
            error = self._classify(exc)
            if error.code == "INTERNAL" and not isinstance(exc, EngineError):
                logger.exception("adapter %s/%s failed on task %s", self.pool_id, self.replica_id, task_id)
            terminal = events.error(error.to_stream_error(self.engine))
        finally:
            run.worker = None
            if self._runs.get(task_id) is run:
                del self._runs[task_id]
            await _close(stream, batches)
        if terminal.root.event == "end" and terminal.root.data.finish_reason != "canceled":
            if (reported := _engine_metrics(tally, terminal.root.data)) is not None:
                yield reported
        yield terminal

    def _texts(self, batch: list[Any], tally: Tally) -> tuple[list[str], Exception | None]:
        """The token texts of one batch of items; an in-stream error comes back after the tokens before it."""
        texts: list[str] = []
        for item in batch:
            try:
                text = self._read(item, tally)
            except Exception as exc:  # classified by the relay, once these tokens are out
                return texts, exc
            if text:
                texts.append(text)
        return texts, None

    async def _attempt(self, task: TaskRequest, seed: int, deadline: float) -> tuple[EngineStream, float]:
        """One try at opening the stream, bounded by the first-token timeout (llama.cpp answers its headers only
        with the first token). Returns the stream and when its first item is due."""
        loop = asyncio.get_running_loop()
        due = loop.time() + self.policy.first_token_s
        try:
            async with asyncio.timeout_at(min(due, deadline)):
                return await self._open(task, seed), due
        except TimeoutError:
            raise self._timeout_error(loop.time() >= deadline, True) from None

    def _timeout_error(self, deadline_passed: bool, before_first_token: bool) -> EngineError:
        if deadline_passed:
            return EngineError("DEADLINE_UNMET", "the task deadline passed before the engine finished")
        if before_first_token:
            return EngineError("DECODE_TIMEOUT", f"no first token within {self.policy.first_token_s:g}s")
        return EngineError("DECODE_TIMEOUT", f"no token within {self.policy.inter_token_s:g}s of the previous one")


def _enter(run: _Run) -> asyncio.Task[Any]:
    """Mark the relay as working for the current task (so `cancel` can interrupt an await); honour a cancel
    that arrived while the relay was suspended at a `yield`."""
    if run.canceled:
        raise _Canceled
    worker = asyncio.current_task()
    assert worker is not None, "submit() must be iterated inside an asyncio task"
    run.worker = worker
    return worker


async def _close(stream: EngineStream | None, batches: AsyncIterator[list[Any]] | None) -> None:
    # Shielded: closing must finish even when the consumer's task is being canceled.
    if isinstance(batches, AsyncGenerator):
        await asyncio.shield(batches.aclose())
    if stream is not None:
        await asyncio.shield(stream.aclose())


def _started(task: TaskRequest, seed: int, adapter: StreamingAdapter, version: EngineVersion) -> TaskEvent:
    # queue_position / predicted_start_ms are the service's to know: the adapter sends 0 and the service overwrites.
    return events.started(
        Started.model_construct(
            task_id=task.task_id or "",
            queue_position=0,
            predicted_start_ms=0,
            engine=adapter.engine,
            engine_version=version.version,
            model=version.model or adapter.model,
            model_digest=version.model_digest,
            pool_id=adapter.pool_id,
            replica_id=adapter.replica_id,
            seed=seed,
            sampler_profile_version=task.sampler_profile_version,
        )
    )


def _engine_metrics(tally: Tally, end: End) -> TaskEvent | None:
    """The contract's `metrics` event, from what the engine itself reported (timings, usage); None without."""
    if tally.decode_ms is None and tally.tokens_in is None:
        return None
    values: dict[str, Any] = {
        "latency_first_token_ms": end.first_token_ms,
        "latency_decode_ms": end.decode_time_ms,
        "tokens_out": end.tokens_out,
    }
    return events.metrics(Metrics.model_construct(None, **{k: v for k, v in values.items() if v is not None}))


def _end(
    tally: Tally,
    emitted: int,
    dispatched: float,
    first_token_at: float | None,
    now: float,
    version: EngineVersion | None,
    finish_reason: FinishReason | None,
) -> TaskEvent:
    measured_decode_ms = 0.0 if first_token_at is None else (now - first_token_at) * 1000.0
    canceled = finish_reason == "canceled"
    return events.end(
        End.model_construct(
            # A canceled stream counts what the consumer got; otherwise the engine's own numbers win.
            tokens_out=emitted if canceled or tally.tokens_out is None else tally.tokens_out,
            decode_time_ms=measured_decode_ms if canceled or tally.decode_ms is None else tally.decode_ms,
            tokens_in=tally.tokens_in,
            first_token_ms=None if first_token_at is None else (first_token_at - dispatched) * 1000.0,
            finish_reason=finish_reason or "stop",
            engine_version=None if version is None else version.version,
        )
    )
