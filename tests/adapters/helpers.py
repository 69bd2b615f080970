"""Shared helpers of the adapter tests: run a task to its end and check the event-stream invariants."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from llama_orch_gen.contracts.events import EndEvent, ErrorEvent, StartedEvent, TaskEvent, TokenEvent
from llama_orch_gen.contracts.task_request import TaskRequest

from llama_orch.adapters.base import WorkerAdapter

GUARD_S = 30.0  # generous hang guard; tests never assert speed


@dataclass
class Outcome:
    events: list[TaskEvent]

    @property
    def text(self) -> str:
        return "".join(e.root.data.t for e in self.events if isinstance(e.root, TokenEvent))

    @property
    def terminal(self) -> EndEvent | ErrorEvent:
        last = self.events[-1].root
        assert isinstance(last, EndEvent | ErrorEvent), last
        return last

    @property
    def code(self) -> str:
        terminal = self.terminal
        return terminal.data.code if isinstance(terminal, ErrorEvent) else f"end:{terminal.data.finish_reason}"


def check_invariants(events: list[TaskEvent]) -> None:
    """started? → token* (i contiguous from 0) → exactly one terminal event, last; every event validates."""
    kinds = [e.root.event for e in events]
    assert kinds, "no events"
    assert sum(k in ("end", "error") for k in kinds) == 1 and kinds[-1] in ("end", "error"), kinds
    if "started" in kinds:
        assert kinds.index("started") == 0 and kinds.count("started") == 1, kinds
    else:
        assert kinds == ["error"], kinds  # the engine never accepted the task
    indices = [e.root.data.i for e in events if isinstance(e.root, TokenEvent)]
    assert indices == list(range(len(indices))), indices
    for event in events:
        TaskEvent.model_validate(event.model_dump(mode="json"))
        if isinstance(event.root, StartedEvent):
            assert event.root.data.engine_version


async def run_task(adapter: WorkerAdapter, task: TaskRequest) -> Outcome:
    async with asyncio.timeout(GUARD_S):
        events = [event async for event in adapter.submit(task)]
    check_invariants(events)
    return Outcome(events)
