"""The worker adapter contract: the only thing the orchestrator knows about an engine.

An adapter turns one task into one engine call and the engine's stream into one event stream,
`started → token* → metrics? → end | error`, with exactly one terminal event whatever happens.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from llama_orch_gen.contracts.events import TaskEvent
from llama_orch_gen.contracts.task_request import TaskRequest

from llama_orch.events import TokenRun


class HealthState(StrEnum):
    HEALTHY = "healthy"  # live and ready, with free capacity
    DEGRADED = "degraded"  # ready but impaired (e.g. no free slot, or the last probe failed)
    UNHEALTHY = "unhealthy"  # not ready: unreachable, loading, or refusing our credentials


@dataclass(frozen=True)
class Health:
    live: bool
    ready: bool
    state: HealthState
    detail: str | None = None  # why it is not healthy, already redacted
    code: str | None = None  # the contract error code of that reason (e.g. UPSTREAM_AUTH), when there is one


@dataclass(frozen=True)
class EngineProps:
    """What the engine reports about its capacity; `raw` keeps the engine's own answer."""

    slots_total: int | None = None
    slots_free: int | None = None
    ctx_size: int | None = None
    model: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EngineLoad:
    """Requests the engine reports in flight, from every client (ours included)."""

    running: int
    waiting: int


@dataclass(frozen=True)
class EngineVersion:
    """Identity of what produced a stream: travels with every `started` and `end` event."""

    engine: str
    version: str
    model: str | None = None
    model_digest: str | None = None


@runtime_checkable
class WorkerAdapter(Protocol):
    """One engine replica. Implementations never raise out of `submit`: failures become an `error` event."""

    engine: str
    pool_id: str
    replica_id: str

    async def health(self) -> Health: ...

    async def props(self) -> EngineProps: ...

    async def engine_version(self) -> EngineVersion: ...

    async def load(self) -> EngineLoad | None:
        """What the engine reports running and waiting, asked on every probe; None when it reports nothing."""
        ...

    def submit(self, task: TaskRequest) -> AsyncIterator[TaskEvent]:
        """Run `task` (its `task_id` is set); closing the iterator early cancels the engine request."""
        ...

    def relay(self, task: TaskRequest) -> AsyncGenerator[TaskEvent | TokenRun, None]:
        """`submit`'s events with the tokens of each engine read as one `TokenRun` (what the service streams)."""
        ...

    async def cancel(self, task_id: str) -> bool:
        """Stop a running task; its stream ends with `end` (finish_reason `canceled`). False if unknown."""
        ...

    async def aclose(self) -> None: ...


class AdapterRegistry:
    """Adapters keyed by `(pool_id, replica_id)`, in registration order."""

    def __init__(self) -> None:
        self._adapters: dict[tuple[str, str], WorkerAdapter] = {}

    def register(self, adapter: WorkerAdapter) -> None:
        key = (adapter.pool_id, adapter.replica_id)
        if key in self._adapters:
            raise ValueError(f"replica {key[1]!r} of pool {key[0]!r} is already registered")
        self._adapters[key] = adapter

    def get(self, pool_id: str, replica_id: str) -> WorkerAdapter:
        return self._adapters[(pool_id, replica_id)]

    def pool(self, pool_id: str) -> list[WorkerAdapter]:
        return [a for (pool, _), a in self._adapters.items() if pool == pool_id]

    def pools(self) -> list[str]:
        return list(dict.fromkeys(pool for pool, _ in self._adapters))

    def __iter__(self) -> Iterator[WorkerAdapter]:
        return iter(list(self._adapters.values()))

    def __len__(self) -> int:
        return len(self._adapters)

    async def aclose(self) -> None:
        for adapter in self:
            await adapter.aclose()
