"""Admission: bounded two-lane queues with the configured policy, typed backpressure, readiness, least-loaded
dispatch and redispatch of a task whose replica failed before starting it."""

from __future__ import annotations

from llama_orch.adapters.mock import Fault
from tests.service.helpers import (
    NO_RETRY,
    RecordingMock,
    Service,
    blocked,
    cancel,
    check_envelope,
    inflight,
    mock_pool,
    pool_health,
    read_stream,
    service,
    start_blocker,
    submit,
    tokens,
    wait_idle,
    wait_until,
)


def test_queue_positions_and_interactive_before_batch() -> None:
    svc = blocked(capacity=8)
    with svc.running() as http:
        start_blocker(http)
        order = [("i1", "interactive"), ("i2", "interactive"), ("b1", "batch"), ("i3", "interactive"), ("b2", "batch")]
        admissions = {
            task_id: submit(http, {"prompt": task_id, "task_id": task_id, "priority": p}) for task_id, p in order
        }
        positions = {task_id: a["queue_position"] for task_id, a in admissions.items()}
        # Interactive tasks wait only behind interactive ones; batch tasks behind everything queued.
        assert positions == {"i1": 0, "i2": 1, "b1": 2, "i3": 2, "b2": 4}, positions
        predicted = [admissions[t]["predicted_start_ms"] for t in ("i1", "i2", "b1", "b2")]
        assert all(p > 0 for p in predicted) and predicted == sorted(predicted), predicted
        assert pool_health(http)["queue_depth"] == 5
        cancel(http, "blocker")
        for task_id, _ in order:
            frames = read_stream(http, task_id)
            assert frames[-1].event == "end" and frames[-1].data["finish_reason"] in ("stop", "length"), frames
            assert frames[0].data["queue_position"] == positions[task_id]
        mock = svc.mock()
        assert isinstance(mock, RecordingMock)
        assert mock.opened == ["blocker", "i1", "i2", "i3", "b1", "b2"]


def test_reject_policy_is_a_typed_429() -> None:
    svc = blocked(capacity=1, policy="reject")
    with svc.running() as http:
        start_blocker(http)
        submit(http, {"prompt": "queued", "task_id": "queued"})
        answer = http.post("/v1/tasks", json={"prompt": "one too many"})
        refusal = check_envelope(answer, 429, "ADMISSION_REJECT")
        assert refusal["policy_label"] == "reject" and refusal["retriable"] is True, refusal
        assert refusal["pool_id"] == "default"
        retry_after = answer.headers["retry-after"]
        assert retry_after.isdigit() and int(retry_after) >= 1, retry_after
        backoff = answer.headers["x-backoff-ms"]
        assert backoff.isdigit() and int(backoff) == refusal["retry_after_ms"], (backoff, refusal)
        assert int(retry_after) == max(1, int(backoff) // 1000)
        # The queued task was not disturbed; once the queue drains, admission works again.
        cancel(http, "blocker")
        assert read_stream(http, "queued")[-1].event == "end"
        wait_until(lambda: pool_health(http)["queue_depth"] == 0, "queue drained")
        submit(http, {"prompt": "later"})


def test_drop_lru_evicts_the_oldest_batch_task_first() -> None:
    svc = blocked(capacity=2, policy="drop-lru")
    with svc.running() as http:
        start_blocker(http)
        submit(http, {"prompt": "x", "task_id": "i1"})
        submit(http, {"prompt": "x", "task_id": "b1", "priority": "batch"})
        submit(http, {"prompt": "x", "task_id": "i2"})  # full: b1 goes, though i1 is older
        b1 = read_stream(http, "b1")
        assert [f.event for f in b1] == ["error"] and b1[0].data["code"] == "QUEUE_FULL_DROP_LRU", b1
        assert pool_health(http)["queue_depth"] == 2
        submit(http, {"prompt": "x", "task_id": "i3"})  # full again, no batch task left: the oldest, i1
        i1 = read_stream(http, "i1")
        assert [f.event for f in i1] == ["error"] and i1[0].data["code"] == "QUEUE_FULL_DROP_LRU", i1
        cancel(http, "blocker")
        for task_id in ("i2", "i3"):
            assert read_stream(http, task_id)[-1].event == "end"
        mock = svc.mock()
        assert isinstance(mock, RecordingMock)
        assert mock.opened == ["blocker", "i2", "i3"]


def test_pool_without_ready_replica_is_503() -> None:
    svc = service()
    svc.mock().inject(Fault("loading"))
    with svc.running() as http:
        answer = http.post("/v1/tasks", json={"prompt": "x"})
        refusal = check_envelope(answer, 503, "POOL_UNREADY")
        assert refusal["retriable"] is True
        assert int(answer.headers["retry-after"]) >= 1 and answer.headers["x-backoff-ms"].isdigit()
        assert pool_health(http)["ready"] is False


def test_least_loaded_dispatch_across_two_replicas() -> None:
    svc = service(mock_pool(replicas=("m0", "m1")))
    for mock in svc.mocks():
        mock.inject(Fault("stall_first"))  # every task holds its replica until canceled
    with svc.running() as http:
        ids = [submit(http, {"prompt": "x"})["task_id"] for _ in range(3)]
        wait_until(lambda: sum(inflight(http).values()) == 3, "three tasks placed")
        assert sorted(inflight(http).values()) == [1, 2]
        ids.append(submit(http, {"prompt": "x"})["task_id"])
        wait_until(lambda: sum(inflight(http).values()) == 4, "four tasks placed")
        assert inflight(http) == {"m0": 2, "m1": 2}
        for task_id in ids:
            cancel(http, task_id)
        wait_idle(svc, http)
        for task_id in ids:
            frames = read_stream(http, task_id)
            assert frames[-1].event == "end" and frames[-1].data["finish_reason"] == "canceled", frames


def redispatch_service() -> Service:
    # No background probe during the test: only the failure itself may mark a replica unready.
    return service(
        mock_pool(replicas=("m0", "m1"), replica=NO_RETRY, outlier_detection={"consecutive_failures": 1}),
        health_interval_ms=3_600_000,
    )


def test_replica_failing_before_start_is_redispatched() -> None:
    svc = redispatch_service()
    with svc.running() as http:
        svc.mock("m0").inject(Fault("refuse"))  # after the startup probe: m0 looks ready until it is asked
        frames = read_stream(http, submit(http, {"prompt": "x", "max_tokens": 5})["task_id"])
        assert frames[0].event == "started" and frames[0].data["replica_id"] == "m1", frames
        assert frames[-1].event == "end" and len(tokens(frames)) == 5
        assert (svc.mock("m0").calls, svc.mock("m1").calls) == (1, 1)
        replicas = {r["replica_id"]: r for r in pool_health(http)["replicas"]}
        assert replicas["m0"]["ready"] is False and "ejected" in replicas["m0"]["last_error"], replicas
        assert "refused" in replicas["m0"]["last_error"] and replicas["m0"]["state"] == "unhealthy", replicas
        # The next task goes straight to the healthy replica.
        frames = read_stream(http, submit(http, {"prompt": "y"})["task_id"])
        assert frames[0].data["replica_id"] == "m1" and svc.mock("m0").calls == 1


def test_every_replica_failing_is_replica_exhausted() -> None:
    svc = redispatch_service()
    with svc.running() as http:
        for mock in svc.mocks():
            mock.inject(Fault("refuse"))
        frames = read_stream(http, submit(http, {"prompt": "x"})["task_id"])
        assert [f.event for f in frames] == ["error"], frames
        assert frames[0].data["code"] == "REPLICA_EXHAUSTED" and frames[0].data["retriable"] is True
        assert [m.calls for m in svc.mocks()] == [1, 1]
        # Nobody is ejected for a task every replica failed: that may be the request; the active probe decides.
        assert pool_health(http)["ready"] is True
