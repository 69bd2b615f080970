"""Health of every engine adapter: healthy, still loading, unreachable — one shared probe, engine-specific routes."""

from __future__ import annotations

import json

import httpx
import pytest
from llama_orch_gen.contracts.config import ReplicaConfig

from llama_orch.adapters.base import HealthState
from llama_orch.adapters.http_adapter import HttpAdapter
from llama_orch.adapters.http_policy import HttpPolicy
from llama_orch.service.pools import FULL_PROBE_EVERY, ReplicaState
from tests.adapters.wire_fakes import DIALECTS, Dialect

HEALTH_ROUTES = {
    "llamacpp": "/health",
    "vllm": "/health",
    "tgi": "/health",
    "triton": "/v2/models/ensemble/ready",
}
# Asked on every probe after the health route: the engine's own queue, where it reports one.
LOAD_ROUTES = {"vllm": ["/metrics"]}
HEALTHY_BODY = {"llamacpp": b'{"status":"ok"}'}  # the others answer 200 with an empty body
EXTRA_CONTROL = {  # routes the fakes' control tables leave out but the probe reads
    "vllm": {
        "/v1/models": (200, b'{"object":"list","data":[{"id":"tiny","object":"model","created":0,"owned_by":"vllm"}]}'),
        "/metrics": (200, b'vllm:num_requests_running{engine="0"} 1.0\nvllm:num_requests_waiting{engine="0"} 0.0\n'),
    },
}


def _adapter(dialect: Dialect, health_status: int | None, seen: list[str] | None = None) -> HttpAdapter:
    """`health_status` None: the engine cannot be reached at all. `seen` collects the paths asked."""
    control = {**dialect.control, **EXTRA_CONTROL.get(dialect.engine, {})}

    def handle(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request.url.path)
        if health_status is None:
            raise httpx.ConnectError("[Errno 111] Connection refused")
        if request.url.path == HEALTH_ROUTES[dialect.engine]:
            body = (
                HEALTHY_BODY.get(dialect.engine, b"")
                if health_status == 200
                else json.dumps(dialect.error_body(health_status)).encode()
            )
            return httpx.Response(health_status, content=body, headers={"content-type": "application/json"})
        status, body = control.get(request.url.path, (404, b'{"error":"not found"}'))
        return httpx.Response(status, content=body, headers={"content-type": "application/json"})

    return dialect.make(base_url="http://engine", policy=HttpPolicy(), transport=httpx.MockTransport(handle))


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.engine)
async def test_healthy_engine_is_live_ready_and_versioned(dialect: Dialect) -> None:
    adapter = _adapter(dialect, 200)
    health = await adapter.health()
    assert (health.live, health.ready, health.state) == (True, True, HealthState.HEALTHY), health.detail
    assert (await adapter.engine_version()).version
    await adapter.aclose()


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.engine)
async def test_loading_engine_is_live_but_not_ready(dialect: Dialect) -> None:
    status = 400 if dialect.engine == "triton" else 503  # Triton says "not ready" with 400
    adapter = _adapter(dialect, status)
    health = await adapter.health()
    assert (health.live, health.ready, health.state) == (True, False, HealthState.UNHEALTHY)
    assert health.detail
    await adapter.aclose()


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.engine)
async def test_unreachable_engine_is_not_live(dialect: Dialect) -> None:
    adapter = _adapter(dialect, None)
    health = await adapter.health()
    assert (health.live, health.ready, health.state) == (False, False, HealthState.UNHEALTHY)
    await adapter.aclose()


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.engine)
async def test_the_periodic_probe_is_one_call(dialect: Dialect) -> None:
    """Capacity and version are read when a replica becomes ready and on every FULL_PROBE_EVERY-th probe; the
    probes between are one call to the health route (plus, for vLLM, its queue gauges), so a busy engine is not
    asked six times per interval."""
    seen: list[str] = []
    replica = ReplicaState(_adapter(dialect, 200, seen), ReplicaConfig(id="r0", base_url="http://engine"))
    await replica.probe(5.0)
    assert replica.ready and replica.engine_version, seen
    seen.clear()
    for _ in range(FULL_PROBE_EVERY - 1):
        await replica.probe(5.0)
    assert seen == [HEALTH_ROUTES[dialect.engine], *LOAD_ROUTES.get(dialect.engine, [])] * (FULL_PROBE_EVERY - 1)
    seen.clear()
    await replica.probe(5.0)
    assert seen[0] == HEALTH_ROUTES[dialect.engine] and len(seen) > 1, seen
    await replica.adapter.aclose()
