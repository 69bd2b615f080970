"""Admission rules: a model no pool serves is refused (unless the task allows fallback), drop-lru never evicts a
higher-priority task for a lower one, a slot-pinned replica runs one task at a time, and llama.cpp's "random seed"
sentinel is refused."""

from __future__ import annotations

from llama_orch.adapters.mock import Fault
from tests.service.helpers import (
    RecordingMock,
    blocked,
    cancel,
    check_envelope,
    inflight,
    mock_pool,
    pool_health,
    read_stream,
    run_task,
    service,
    start_blocker,
    submit,
    wait_until,
)


def two_models() -> list[dict[str, object]]:
    return [mock_pool("small", model="tiny"), mock_pool("large", replicas=("l0",), model="big")]


def test_a_model_no_pool_serves_is_refused_naming_the_served_models() -> None:
    with service(*two_models()).running() as http:
        refusal = check_envelope(
            http.post("/v1/tasks", json={"prompt": "x", "model_ref": "gpt-17"}), 404, "MODEL_NOT_SERVED"
        )
        assert refusal["field"] == "model_ref" and refusal["retriable"] is False, refusal
        assert "gpt-17" in refusal["message"] and "big" in refusal["message"] and "tiny" in refusal["message"]


def test_model_ref_chooses_the_pool_that_serves_it() -> None:
    with service(*two_models()).running() as http:
        for model, pool in (("big", "large"), ("tiny", "small")):
            assert submit(http, {"prompt": "x", "model_ref": model})["pool_id"] == pool


def test_pinning_a_pool_that_serves_another_model_is_refused() -> None:
    with service(*two_models()).running() as http:
        body = {"prompt": "x", "model_ref": "big", "placement": {"mode": "pin", "pin_pool_id": "small"}}
        check_envelope(http.post("/v1/tasks", json=body), 404, "MODEL_NOT_SERVED")


def test_explicit_fallback_runs_on_another_model() -> None:
    with service(*two_models()).running() as http:
        body = {"prompt": "x", "model_ref": "gpt-17", "placement": {"allow_fallback": True}}
        assert run_task(http, body)[-1].event == "end"


def test_infer_refuses_an_unserved_model_in_its_own_shape() -> None:
    with service(*two_models()).running() as http:
        answer = http.post("/infer", json={"prompt": "x", "model": "gpt-17"})
        assert answer.status_code == 404 and answer.json()["code"] == 404, answer.text
        assert "gpt-17" in answer.json()["error"]


def test_drop_lru_never_evicts_interactive_for_batch() -> None:
    svc = blocked(capacity=2, policy="drop-lru")
    with svc.running() as http:
        start_blocker(http)
        submit(http, {"prompt": "x", "task_id": "i1"})
        submit(http, {"prompt": "x", "task_id": "i2"})
        answer = http.post("/v1/tasks", json={"prompt": "x", "task_id": "b1", "priority": "batch"})
        refusal = check_envelope(answer, 429, "ADMISSION_REJECT")
        assert refusal["policy_label"] == "drop-lru" and refusal["retriable"] is True, refusal
        assert pool_health(http)["queue_depth"] == 2
        cancel(http, "blocker")
        for task_id in ("i1", "i2"):
            assert read_stream(http, task_id)[-1].event == "end"
        mock = svc.mock()
        assert isinstance(mock, RecordingMock)
        assert mock.opened == ["blocker", "i1", "i2"]


def test_a_slot_pinned_replica_runs_one_task_at_a_time() -> None:
    svc = service(mock_pool(replica={"id_slot": 0}))
    svc.mock().inject(Fault("stall_first"))
    with svc.running() as http:
        ids = [submit(http, {"prompt": "x"})["task_id"] for _ in range(3)]
        wait_until(lambda: pool_health(http)["queue_depth"] == 2, "two tasks wait for the pinned slot")
        assert inflight(http) == {"m0": 1}
        for task_id in ids:
            cancel(http, task_id)


def test_llamacpp_random_seed_sentinel_is_refused() -> None:
    with service().running() as http:
        refusal = check_envelope(
            http.post("/v1/tasks", json={"prompt": "x", "seed": 4294967295}), 400, "INVALID_PARAMS"
        )
        assert refusal["field"] == "seed", refusal
        assert http.post("/infer", json={"prompt": "x", "seed": 4294967295}).status_code == 400
        assert run_task(http, {"prompt": "x", "seed": 4294967294, "max_tokens": 2})[-1].event == "end"
