"""Dispatch counts what the engine itself reports (vLLM's running/waiting requests, from every client), not only
the tasks this orchestrator placed: a replica busy with other clients' work is not assumed to have free slots."""

from __future__ import annotations

import time
from typing import Any

from llama_orch.adapters.base import EngineLoad
from llama_orch.adapters.mock import Fault, MockAdapter
from tests.service.helpers import cancel, inflight, mock_pool, pool_health, service, submit, wait_idle, wait_until


class SharedEngine(MockAdapter):
    """A mock whose engine also serves other clients: `others_running` / `others_waiting` requests of theirs."""

    others_running = 0
    others_waiting = 0

    async def load(self) -> EngineLoad | None:
        return EngineLoad(running=self._busy + self.others_running, waiting=self.others_waiting)


class LaggingEngine(SharedEngine):
    """Its count lags one reading behind (as a scraped gauge does): a task just sent is not in it yet."""

    _reported_busy = 0

    async def load(self) -> EngineLoad | None:
        seen, self._reported_busy = self._reported_busy, self._busy
        return EngineLoad(running=seen + self.others_running, waiting=self.others_waiting)


def _replica(http: Any, replica_id: str) -> dict[str, Any]:
    return next(r for r in pool_health(http)["replicas"] if r["replica_id"] == replica_id)


def test_other_clients_load_leaves_only_the_rest_of_max_inflight() -> None:
    svc = service(
        mock_pool(replicas=("m0",), replica={"max_inflight": 4}), adapter_cls=SharedEngine, health_interval_ms=50
    )
    engine = svc.mock()
    assert isinstance(engine, SharedEngine)
    engine.others_running = 3
    engine.inject(Fault("stall_first"))  # our tasks hold their slot until canceled
    with svc.running() as http:
        wait_until(lambda: _replica(http, "m0")["engine_running"] == 3, "the engine's own count reported")
        first, second = (submit(http, {"prompt": "x"})["task_id"] for _ in range(2))
        wait_until(lambda: inflight(http)["m0"] == 1, "one task placed")
        assert pool_health(http)["queue_depth"] == 1, "3 + 1 of 4: the second task waits"
        engine.others_running = 0
        wait_until(lambda: inflight(http)["m0"] == 2, "the second task placed once the others finished")
        for task_id in (first, second):
            cancel(http, task_id)
        wait_idle(svc, http)


def test_a_count_that_does_not_yet_hold_our_own_task_opens_no_slot() -> None:
    """One low reading (our task on its way to the engine, or a gauge one scrape behind) is not taken for the other
    clients having left: a slot opens only when two readings in a row say so."""
    svc = service(
        mock_pool(replicas=("m0",), replica={"max_inflight": 4}), adapter_cls=LaggingEngine, health_interval_ms=50
    )
    engine = svc.mock()
    assert isinstance(engine, LaggingEngine)
    engine.others_running = 3
    engine.inject(Fault("stall_first"))
    with svc.running() as http:
        wait_until(lambda: _replica(http, "m0")["engine_running"] == 3, "the engine's own count reported")
        first, second = (submit(http, {"prompt": "x"})["task_id"] for _ in range(2))
        wait_until(lambda: inflight(http)["m0"] == 1, "one task placed")
        time.sleep(0.3)  # several probes at 50 ms, the first after the dispatch one behind
        assert inflight(http)["m0"] == 1 and pool_health(http)["queue_depth"] == 1, "3 + 1 of 4: the second waits"
        engine.others_running = 0
        wait_until(lambda: inflight(http)["m0"] == 2, "the second task placed once the others finished")
        for task_id in (first, second):
            cancel(http, task_id)
        wait_idle(svc, http)


def test_a_replica_whose_engine_queues_takes_no_new_task_and_work_goes_elsewhere() -> None:
    svc = service(mock_pool(replicas=("m0", "m1")), adapter_cls=SharedEngine, health_interval_ms=50)
    queueing = svc.mock("m0")
    assert isinstance(queueing, SharedEngine)
    queueing.others_waiting = 2
    for mock in svc.mocks():
        mock.inject(Fault("stall_first"))
    with svc.running() as http:
        wait_until(lambda: _replica(http, "m0")["engine_waiting"] == 2, "the engine's queue reported")
        ids = [submit(http, {"prompt": "x"})["task_id"] for _ in range(3)]
        wait_until(lambda: sum(inflight(http).values()) == 3, "three tasks placed")
        assert inflight(http) == {"m0": 0, "m1": 3}
        for task_id in ids:
            cancel(http, task_id)
        wait_idle(svc, http)


def test_engines_that_report_no_load_are_counted_by_the_tasks_placed() -> None:
    svc = service(mock_pool(replica={"max_inflight": 2}), health_interval_ms=50)
    svc.mock().inject(Fault("stall_first"))
    with svc.running() as http:
        ids = [submit(http, {"prompt": "x"})["task_id"] for _ in range(3)]
        wait_until(lambda: inflight(http)["m0"] == 2, "two tasks placed")
        replica = _replica(http, "m0")
        assert "engine_running" not in replica and "engine_waiting" not in replica
        assert pool_health(http)["queue_depth"] == 1
        for task_id in ids:
            cancel(http, task_id)
        wait_idle(svc, http)
