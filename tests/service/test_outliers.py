"""Passive health: a replica is ejected only after repeated failures that another replica proved were its own;
a request every replica refuses (a poison request) ends alone with its own error and ejects nobody."""

from __future__ import annotations

from typing import Any

import pytest

from llama_orch.adapters.mock import Fault
from llama_orch.service.outliers import Outlier, OutlierPolicy
from tests.service.helpers import NO_RETRY, Service, mock_pool, pool_health, run_task, service


def pool(replicas: tuple[str, ...], **outlier: Any) -> Service:
    # No background probe during these tests: only passive detection may change readiness.
    return service(
        mock_pool(replicas=replicas, replica=NO_RETRY, outlier_detection=outlier), health_interval_ms=3_600_000
    )


def ready(svc: Service, http: Any) -> dict[str, bool]:
    return {r["replica_id"]: r["ready"] for r in pool_health(http)["replicas"]}


@pytest.mark.parametrize("kind", ["server_error", "refuse", "loading"])
def test_poison_request_fails_alone_and_the_pool_keeps_serving(kind: str) -> None:
    svc = pool(("m0", "m1"), consecutive_failures=1)
    for mock in svc.mocks():
        mock.inject(Fault(kind, prompt="poison"))  # type: ignore[arg-type]
    with svc.running() as http:
        for _ in range(3):
            frames = run_task(http, {"prompt": "poison"})
            assert [f.event for f in frames] == ["error"], frames
            assert frames[0].data["code"] == "REPLICA_EXHAUSTED", frames
        assert ready(svc, http) == {"m0": True, "m1": True}
        for n in range(10):
            frames = run_task(http, {"prompt": f"healthy {n}", "max_tokens": 3})
            assert frames[-1].event == "end" and frames[-1].data["tokens_out"] == 3, frames


def test_replica_is_ejected_after_consecutive_failures_proven_elsewhere() -> None:
    svc = pool(("m0", "m1"), consecutive_failures=3)
    svc.mock("m0").inject(Fault("server_error"))  # m0 answers health but fails every task
    with svc.running() as http:
        for n in range(12):
            frames = run_task(http, {"prompt": f"t{n}", "max_tokens": 2})
            assert frames[-1].event == "end" and frames[0].data["replica_id"] == "m1", frames
        assert svc.mock("m0").calls == 3  # ejected at the third failure, asked no more
        replicas = {r["replica_id"]: r for r in pool_health(http)["replicas"]}
        assert replicas["m0"]["ready"] is False and "ejected" in replicas["m0"]["last_error"], replicas
        assert replicas["m1"]["ready"] is True


def test_a_started_task_resets_the_count() -> None:
    svc = pool(("m0", "m1"), consecutive_failures=2)
    with svc.running() as http:
        m0 = svc.mock("m0")
        for _ in range(4):  # m0 fails one task, then starts one: never two failures in a row
            m0.inject(Fault("server_error", times=1))
            calls = m0.calls
            for n in range(10):
                if m0.calls == calls + 2:
                    break
                assert run_task(http, {"prompt": f"x{n}", "max_tokens": 1})[-1].event == "end"
            assert m0.calls == calls + 2
        assert ready(svc, http) == {"m0": True, "m1": True}


def test_the_last_ready_replica_is_never_ejected() -> None:
    svc = pool(("m0",), consecutive_failures=1)
    svc.mock().inject(Fault("server_error", times=6))
    with svc.running() as http:
        for _ in range(6):
            frames = run_task(http, {"prompt": "x"})
            assert [f.event for f in frames] == ["error"] and frames[0].data["code"] == "WORKER_RESET", frames
        assert ready(svc, http) == {"m0": True}
        assert run_task(http, {"prompt": "x"})[-1].event == "end"


def test_at_most_the_configured_share_is_ejected() -> None:
    svc = pool(("m0", "m1", "m2", "m3"), consecutive_failures=1, max_ejection_percent=50)
    for replica in ("m0", "m1", "m2"):
        svc.mock(replica).inject(Fault("server_error"))
    with svc.running() as http:
        for n in range(12):
            assert run_task(http, {"prompt": f"t{n}", "max_tokens": 1})[-1].event == "end"
        assert sum(not up for up in ready(svc, http).values()) == 2, ready(svc, http)


def test_request_errors_never_eject() -> None:
    svc = pool(("m0", "m1"), consecutive_failures=1)
    svc.mock("m0").inject(Fault("bad_request", times=3))
    with svc.running() as http:
        outcomes = [run_task(http, {"prompt": f"x{n}"})[-1] for n in range(6)]
        refused = [f.data["code"] for f in outcomes if f.event == "error"]
        assert refused == ["INVALID_PARAMS"] * 3, outcomes  # the engine's 400 is the task's own answer
        assert ready(svc, http) == {"m0": True, "m1": True}


def test_ejection_time_grows_with_repeated_ejections_and_is_capped() -> None:
    policy = OutlierPolicy(consecutive_failures=2, base_ejection_s=10.0, max_ejection_s=25.0, max_ejection_percent=50)
    outlier = Outlier()
    assert outlier.failed(0.0, policy, may_eject=True) is None
    assert outlier.failed(1.0, policy, may_eject=True) == 10.0
    assert outlier.ejected(5.0) and not outlier.ejected(11.0)
    outlier.failed(12.0, policy, may_eject=True)
    assert outlier.failed(13.0, policy, may_eject=True) == 20.0  # again soon after: one base longer
    outlier.failed(34.0, policy, may_eject=True)
    assert outlier.failed(35.0, policy, may_eject=True) == 25.0  # capped
    outlier.succeeded()
    assert outlier.failed(36.0, policy, may_eject=True) is None  # the count starts over after a success


def test_a_quiet_period_resets_the_growth() -> None:
    policy = OutlierPolicy(consecutive_failures=1, base_ejection_s=10.0, max_ejection_s=60.0, max_ejection_percent=50)
    outlier = Outlier()
    assert outlier.failed(0.0, policy, may_eject=True) == 10.0
    assert outlier.failed(200.0, policy, may_eject=True) == 10.0  # long after the last ejection ended


def test_no_ejection_when_not_allowed() -> None:
    policy = OutlierPolicy(consecutive_failures=1, base_ejection_s=10.0, max_ejection_s=60.0, max_ejection_percent=50)
    outlier = Outlier()
    assert outlier.failed(0.0, policy, may_eject=False) is None
    assert not outlier.ejected(0.5)
