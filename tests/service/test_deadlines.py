"""Deadlines are end-to-end from admission: time in the queue counts, a queued task whose deadline passes leaves
the queue at once without taking a slot, and the engine call gets only the time left."""

from __future__ import annotations

import time
from typing import Any

from llama_orch_gen.contracts.task_request import TaskRequest

from tests.service.helpers import (
    RecordingMock,
    blocked,
    cancel,
    inflight,
    pool_health,
    read_stream,
    scrape,
    start_blocker,
    submit,
    total,
)


class DeadlineMock(RecordingMock):
    """Records the deadline each engine call was given."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deadlines: dict[str, int | None] = {}

    async def _open(self, task: TaskRequest, seed: int) -> Any:
        self.deadlines[task.task_id or ""] = task.deadline_ms
        return await super()._open(task, seed)


def test_a_queued_task_whose_deadline_passes_leaves_the_queue_without_a_slot() -> None:
    svc = blocked()
    with svc.running() as http:
        start_blocker(http)  # holds the only slot until canceled
        submit(http, {"prompt": "late", "task_id": "late", "deadline_ms": 300})
        submit(http, {"prompt": "patient", "task_id": "patient"})
        frames = read_stream(http, "late")  # ends while the blocker still holds the slot
        assert [f.event for f in frames] == ["error"], frames
        assert frames[0].data["code"] == "DEADLINE_UNMET" and frames[0].data["retriable"] is False, frames
        assert inflight(http) == {"m0": 1} and pool_health(http)["queue_depth"] == 1
        families = scrape(http)
        assert total(families, "tasks_finished_total", outcome="error") == 1
        cancel(http, "blocker")
        assert read_stream(http, "patient")[-1].event == "end"
        mock = svc.mock()
        assert isinstance(mock, RecordingMock)
        assert mock.opened == ["blocker", "patient"]  # the late task never reached the engine


def test_the_engine_call_gets_only_the_time_left() -> None:
    svc = blocked(adapter_cls=DeadlineMock)
    with svc.running() as http:
        start_blocker(http)
        submit(http, {"prompt": "x", "task_id": "waited", "deadline_ms": 60_000})
        time.sleep(0.3)  # time spent in the queue, which the deadline must count
        cancel(http, "blocker")
        assert read_stream(http, "waited")[-1].event == "end"
        mock = svc.mock()
        assert isinstance(mock, DeadlineMock)
        given = mock.deadlines["waited"]
        assert given is not None and given <= 60_000 - 300, given
