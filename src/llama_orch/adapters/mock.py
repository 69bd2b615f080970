"""An in-process adapter for tests and demos: deterministic text from (prompt, seed), with injectable faults.

It runs through the same relay as the engine adapters (retries, timeouts, cancel, one terminal event), so a fault
injected here surfaces exactly as the same fault from a real engine would.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from llama_orch_gen.contracts.task_request import TaskRequest

from llama_orch.adapters.base import EngineProps, EngineVersion, Health, HealthState
from llama_orch.adapters.http_policy import HttpPolicy
from llama_orch.adapters.streaming import EngineStream, StreamingAdapter, Tally
from llama_orch.determinism import prompt_text
from llama_orch.errors import EngineError
from llama_orch_runtime.streaming import StreamDecodeError, StreamTruncated

__all__ = ["Fault", "FaultKind", "MockAdapter", "mock_text"]

FaultKind = Literal[
    "refuse",  # connection refused → POOL_UNAVAILABLE
    "loading",  # 503 while loading → POOL_UNREADY
    "overloaded",  # 429 with Retry-After → ADMISSION_REJECT
    "server_error",  # 500 → WORKER_RESET (retried)
    "bad_request",  # 400 → INVALID_PARAMS (not retried)
    "auth",  # 401 → UPSTREAM_AUTH
    "stall_first",  # nothing before the first token → DECODE_TIMEOUT
    "stall_mid",  # silence after `after_tokens` tokens → DECODE_TIMEOUT
    "reset_mid",  # connection lost after `after_tokens` → WORKER_RESET
    "malformed",  # an undecodable item after `after_tokens` → WORKER_RESET
    "in_stream_error",  # an engine error payload after `after_tokens` → INTERNAL
    "truncated",  # EOF without the terminal chunk after `after_tokens` → WORKER_RESET
]
_REFUSALS: dict[str, tuple[Any, str, int | None]] = {
    "refuse": ("POOL_UNAVAILABLE", "cannot reach the engine (mock: connection refused)", None),
    "loading": ("POOL_UNREADY", "engine answered 503: Loading model", 503),
    "overloaded": ("ADMISSION_REJECT", "engine answered 429: Model is overloaded", 429),
    "server_error": ("WORKER_RESET", "engine answered 500: internal error", 500),
    "bad_request": ("INVALID_PARAMS", "engine answered 400: invalid request", 400),
    "auth": ("UPSTREAM_AUTH", "engine answered 401: Invalid API Key", 401),
}
_MID_STREAM = frozenset({"stall_mid", "reset_mid", "malformed", "in_stream_error", "truncated"})
_STALL_S = 3600.0


@dataclass
class Fault:
    """One injected fault. `times` = how many engine calls (attempts, so retries count) it hits; None = all.
    `prompt`: hit only tasks with this prompt (a poison request); None = every task."""

    kind: FaultKind
    after_tokens: int = 0
    times: int | None = None
    retry_after_ms: int | None = None
    prompt: str | None = None


# Words with multi-byte characters too, so consumers see real UTF-8 (never split: each token is whole characters).
_WORDS = (" the", " quick", " brown", " fox", " jumps", " over", " a", " lazy", " dog", ",", ".", " é", " 日本", " 🙂")


def mock_text(prompt: str, seed: int, n: int) -> list[str]:
    """The `n` tokens the mock produces for (prompt, seed): stable across processes and platforms."""
    rng = random.Random(int.from_bytes(hashlib.sha256(f"{seed}\x00{prompt}".encode()).digest()[:8], "big"))
    return [rng.choice(_WORDS) for _ in range(n)]


class MockAdapter(StreamingAdapter):
    engine = "mock"

    def __init__(
        self,
        pool_id: str = "default",
        replica_id: str = "mock0",
        *,
        tokens: int = 16,
        token_delay_s: float = 0.0,
        faults: Iterable[Fault] = (),
        slots: int = 4,
        version: str = "mock-1",
        model: str = "mock",
        policy: HttpPolicy | None = None,
    ) -> None:
        super().__init__(pool_id, replica_id, policy=policy or HttpPolicy(), model=model)
        self.tokens = tokens
        self.token_delay_s = token_delay_s
        self.faults: list[Fault] = list(faults)
        self.slots = slots
        self.version = version
        self.calls = 0  # engine calls made (attempts), for tests of the retry policy
        self._busy = 0

    def inject(self, *faults: Fault) -> None:
        self.faults.extend(faults)

    def _take_fault(self, prompt: str) -> Fault | None:
        for fault in self.faults:
            if fault.prompt not in (None, prompt):
                continue
            if fault.times is None:
                return fault
            if fault.times > 0:
                fault.times -= 1
                return fault
        return None

    async def health(self) -> Health:
        down = next(
            (f.kind for f in self.faults if f.kind in ("refuse", "loading") and f.times != 0 and f.prompt is None), None
        )
        if down is not None:
            return Health(live=down == "loading", ready=False, state=HealthState.UNHEALTHY, detail=f"mock: {down}")
        state = HealthState.HEALTHY if self._busy < self.slots else HealthState.DEGRADED
        return Health(live=True, ready=True, state=state)

    async def props(self) -> EngineProps:
        return EngineProps(
            slots_total=self.slots, slots_free=max(0, self.slots - self._busy), model=self.model, raw={"mock": True}
        )

    async def engine_version(self) -> EngineVersion:
        return EngineVersion(engine=self.engine, version=self.version, model=self.model)

    async def aclose(self) -> None:
        return None

    async def _open(self, task: TaskRequest, seed: int) -> EngineStream:
        self.calls += 1
        fault = self._take_fault(prompt_text(task))
        if fault is not None and fault.kind in _REFUSALS:
            code, message, status = _REFUSALS[fault.kind]
            raise EngineError(code, message, retry_after_ms=fault.retry_after_ms, status=status)
        if fault is not None and fault.kind == "stall_first":
            self._busy += 1  # the engine holds (and counts) the request while it stalls, as a real one does
            try:
                await asyncio.sleep(_STALL_S)
            finally:
                self._busy -= 1
        limit = min(self.tokens, task.max_tokens or self.tokens)
        mid_stream = fault if fault is not None and fault.kind in _MID_STREAM else None
        return _MockStream(self, mock_text(prompt_text(task), seed, limit), limit < self.tokens, mid_stream)

    def _read(self, item: Any, tally: Tally) -> str:
        if isinstance(item, _Final):
            tally.finish_reason = item.finish_reason
            tally.tokens_out = item.tokens_out
            return ""
        assert isinstance(item, str)
        return item


@dataclass(frozen=True, slots=True)
class _Final:
    finish_reason: Literal["stop", "length"]
    tokens_out: int


class _MockStream:
    def __init__(self, adapter: MockAdapter, words: list[str], hit_limit: bool, fault: Fault | None) -> None:
        self._adapter = adapter
        self._words = words
        self._hit_limit = hit_limit
        self._fault = fault
        self._open = True
        adapter._busy += 1

    async def batches(self) -> AsyncIterator[list[Any]]:
        """One item per batch: a mock token is one network read."""
        async for item in self._items():
            yield [item]

    async def _items(self) -> AsyncIterator[Any]:
        fault, delay = self._fault, self._adapter.token_delay_s
        for n, word in enumerate(self._words):
            if fault is not None and n == fault.after_tokens:
                await _fail(fault)
            if delay > 0:
                await asyncio.sleep(delay)
            yield word
        if fault is not None and fault.after_tokens >= len(self._words):
            await _fail(fault)
        yield _Final("length" if self._hit_limit else "stop", len(self._words))

    async def aclose(self) -> None:
        if self._open:
            self._open = False
            self._adapter._busy -= 1


async def _fail(fault: Fault) -> None:
    if fault.kind == "stall_mid":
        await asyncio.sleep(_STALL_S)
    elif fault.kind == "reset_mid":
        raise EngineError("WORKER_RESET", "engine connection lost (mock: reset)")
    elif fault.kind == "malformed":
        raise StreamDecodeError("bad stream item (mock)", "{not json")
    elif fault.kind == "in_stream_error":
        raise EngineError("INTERNAL", "engine error inside the stream (mock)")
    elif fault.kind == "truncated":
        raise StreamTruncated("stream ended before its final item")
