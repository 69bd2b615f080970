"""POST /v1/tasks is idempotent by `task_id`: a client may retry a submit whose answer it lost (the generated
client's retry loop does) and the task is admitted once. The repeat must be the same request; a different request
under a task id the orchestrator still keeps is refused."""

from __future__ import annotations

from tests.service.helpers import (
    RecordingMock,
    blocked,
    cancel,
    check_envelope,
    pool_health,
    read_stream,
    start_blocker,
    submit,
)


def test_an_identical_repeat_is_answered_with_the_first_admission_and_runs_once() -> None:
    svc = blocked()
    with svc.running() as http:
        start_blocker(http)
        body = {"prompt": "hello", "task_id": "t-1", "max_tokens": 4}
        first = submit(http, body)
        again = submit(http, body)
        assert again == first
        assert pool_health(http)["queue_depth"] == 1  # t-1 waits behind the blocker, once
        cancel(http, "blocker")
        frames = read_stream(http, "t-1")
        assert frames[-1].event == "end"
        mock = svc.mock()
        assert isinstance(mock, RecordingMock)
        assert mock.opened == ["blocker", "t-1"]


def test_a_different_request_under_a_kept_task_id_is_refused() -> None:
    svc = blocked()
    with svc.running() as http:
        start_blocker(http)
        submit(http, {"prompt": "hello", "task_id": "t-1"})
        answer = http.post("/v1/tasks", json={"prompt": "other", "task_id": "t-1"})
        assert check_envelope(answer, 400, "INVALID_PARAMS")["field"] == "task_id"
        cancel(http, "blocker")
