"""Load and abuse (issue 7.3): a thousand concurrent tasks against a small queue under each policy, oversized and
unauthenticated requests, secrets that must never leak, and a reader that stops reading. No timing assertions."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

import httpx
import pytest

from llama_orch.adapters.base import AdapterRegistry
from llama_orch.adapters.factory import build_adapter
from tests.service.helpers import (
    GUARD_S,
    Service,
    WideMock,
    check_order,
    inflight,
    make_config,
    mock_pool,
    open_stream,
    parse_sse,
    scrape,
    service,
    submit,
    total,
    validate,
    wait_idle,
)

TASKS = 1000
CONCURRENCY = 100
ORCH_TOKEN = "orch-load-token-0c2f6b1d9e"
ENGINE_TOKEN = "engine-key-9b7e5d3c1a2f"
ORCH_ENV, ENGINE_ENV = "LLORCH_LOAD_TOKEN", "LLORCH_LOAD_ENGINE_KEY"


async def one_task(http: httpx.AsyncClient, n: int, outcomes: Counter[str], gate: asyncio.Semaphore) -> None:
    """Submit; when admitted read the stream to its end; count how it ended."""
    async with gate:
        priority = "batch" if n % 3 == 0 else "interactive"
        answer = await http.post("/v1/tasks", json={"prompt": f"load {n}", "max_tokens": 4, "priority": priority})
        if answer.status_code != 202:
            body = answer.json()
            validate(body, "error-envelope.json")
            assert answer.status_code == 429 and int(answer.headers["retry-after"]) >= 1, (answer.status_code, body)
            outcomes[f"rejected:{body['code']}"] += 1
            return
        outcomes["accepted"] += 1
        stream = await http.get(answer.json()["streams"]["sse"])
        assert stream.status_code == 200, stream.text
        terminal = check_order(parse_sse(stream.content))
        outcomes[f"{terminal.event}:{terminal.data.get('code') or terminal.data.get('finish_reason')}"] += 1


@pytest.mark.parametrize("policy", ["reject", "drop-lru"])
async def test_a_thousand_tasks_against_a_small_queue(policy: str) -> None:
    svc = service(
        mock_pool(queue={"capacity": 8, "policy": policy}, replica={"max_inflight": 2}),
        mock={"tokens": 4, "token_delay_s": 0.001},
    )
    outcomes: Counter[str] = Counter()
    gate = asyncio.Semaphore(CONCURRENCY)
    limits = httpx.Limits(max_connections=CONCURRENCY * 2, max_keepalive_connections=CONCURRENCY)
    with svc.running() as sync_http:
        async with httpx.AsyncClient(base_url=svc.url, timeout=GUARD_S, limits=limits) as http:
            await asyncio.gather(*(one_task(http, n, outcomes, gate) for n in range(TASKS)))
        wait_idle(svc, sync_http)
        metrics = scrape(sync_http)
    print(f"\n{policy}: {dict(outcomes)}")
    accepted = outcomes["accepted"]
    rejected = sum(v for k, v in outcomes.items() if k.startswith("rejected:"))
    ended = sum(v for k, v in outcomes.items() if k.startswith(("end:", "error:")))
    assert accepted + rejected == TASKS
    assert ended == accepted  # every admitted task's stream ended with exactly one terminal event (check_order)
    assert total(metrics, "tasks_enqueued_total") == accepted
    assert total(metrics, "tasks_finished_total") == accepted
    assert total(metrics, "tasks_rejected_total") == rejected
    assert total(metrics, "queue_depth") == 0
    if policy == "reject":
        assert rejected > 0 and set(outcomes) <= {"accepted", "rejected:ADMISSION_REJECT", "end:stop"}, outcomes
        assert total(metrics, "tasks_rejected_total", reason="ADMISSION_REJECT") == rejected
        assert total(metrics, "admission_backpressure_events_total", policy="reject") == rejected
    else:
        # A batch newcomer finding only interactive tasks queued is refused rather than evicting one of them.
        dropped = outcomes["error:QUEUE_FULL_DROP_LRU"]
        expected = {"accepted", "rejected:ADMISSION_REJECT", "error:QUEUE_FULL_DROP_LRU", "end:stop"}
        assert dropped > 0 and set(outcomes) <= expected, outcomes
        assert total(metrics, "admission_backpressure_events_total", policy="drop-lru") == dropped + rejected
        assert total(metrics, "tasks_finished_total", outcome="error") == dropped
    assert total(metrics, "tasks_finished_total", outcome="end") == outcomes["end:stop"]


# -- abuse -----------------------------------------------------------------------------------------------------


def fake_vllm(request: httpx.Request) -> httpx.Response:
    """A vLLM that serves health and version but refuses completions, echoing the credentials it was sent."""
    path = request.url.path
    if path == "/health":
        return httpx.Response(200)
    if path == "/version":
        return httpx.Response(200, json={"version": "0.6.3"})
    if path == "/v1/models":
        card = {"id": "m", "object": "model", "created": 0, "owned_by": "vllm", "max_model_len": 2048}
        return httpx.Response(200, json={"object": "list", "data": [card]})
    sent = request.headers.get("authorization", "")
    return httpx.Response(401, json={"error": f"Invalid API key in '{sent}' (key {ENGINE_TOKEN})"})


def abuse_service(monkeypatch: pytest.MonkeyPatch) -> Service:
    monkeypatch.setenv(ORCH_ENV, ORCH_TOKEN)
    monkeypatch.setenv(ENGINE_ENV, ENGINE_TOKEN)
    vllm = {
        "id": "vllm",
        "engine": "vllm",
        "model": "m",
        "replicas": [
            {"id": "v0", "base_url": "http://vllm.test", "bearer_token_env": ENGINE_ENV, "retry": {"max_attempts": 1}}
        ],
    }
    config = make_config(mock_pool(), vllm, auth_token_env=ORCH_ENV, max_body_bytes=2_200_000)
    registry = AdapterRegistry()
    for pool in config.pools:
        for replica in pool.replicas:
            transport = httpx.MockTransport(fake_vllm) if pool.engine == "vllm" else None
            registry.register(build_adapter(pool, replica, transport=transport))
    return Service(config, registry)


async def test_oversized_unauthenticated_and_secrets(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    svc = abuse_service(monkeypatch)
    good = {"authorization": f"Bearer {ORCH_TOKEN}"}
    bodies: list[str] = []
    with svc.running() as sync_http:
        async with httpx.AsyncClient(base_url=svc.url, timeout=GUARD_S) as http:

            async def post(path: str, body: Any = None, content: bytes | None = None, **headers: str) -> httpx.Response:
                answer = await http.post(
                    path, json=body, content=content, headers={**good, "content-type": "application/json", **headers}
                )
                bodies.append(answer.text + str(answer.headers))
                return answer

            huge = "x" * 1_048_577  # over the schema's maxLength, under the body limit
            answers = await asyncio.gather(
                post("/v1/tasks", {"prompt": huge}),
                post("/v1/tasks", {"inputs": ["x"] * 65}),
                post("/v1/tasks", content=b'{"prompt": "' + b"y" * 2_300_000 + b'"}'),
                post("/infer", content=b'{"prompt": "' + b"y" * 2_300_000 + b'"}'),
                post("/infer", {"prompt": huge}),
                *(post("/v1/tasks", {"prompt": "x"}, authorization=value) for value in ("", "Bearer nope", ORCH_TOKEN)),
                post("/infer", {"prompt": "x"}, authorization=f"Bearer {ENGINE_TOKEN}"),
            )
            statuses = [a.status_code for a in answers]
            assert statuses == [400, 400, 413, 413, 400, 401, 401, 401, 401], statuses
            for answer in answers[:3] + answers[5:8]:
                validate(answer.json(), "error-envelope.json")
            assert answers[0].json()["field"] == "prompt" and answers[1].json()["field"] == "inputs"
            for answer in (answers[3], answers[4], answers[8]):
                validate(answer.json(), "infer-line.json#/$defs/InferError")
            # The engine refuses our key and echoes it: the task fails typed, with the key redacted everywhere.
            task = await post("/v1/tasks", {"prompt": "x", "placement": {"mode": "pin", "pin_pool_id": "vllm"}})
            assert task.status_code == 202, task.text
            stream = await http.get(task.json()["streams"]["sse"], headers=good)
            bodies.append(stream.text)
            frames = parse_sse(stream.content)
            assert check_order(frames).data["code"] == "UPSTREAM_AUTH", frames
            for path in ("/v1/pools/vllm/health", "/metrics", "/v1/capabilities"):
                bodies.append((await http.get(path, headers=good)).text)
        assert not inflight(sync_http, "vllm")["v0"]
    logged = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    for secret in (ORCH_TOKEN, ENGINE_TOKEN):
        assert secret not in logged, secret
        assert not [b for b in bodies if secret in b], secret


def test_a_reader_that_stops_does_not_hold_an_engine_slot() -> None:
    svc = service(
        mock_pool(replica={"max_inflight": 1}),
        adapter_cls=WideMock,
        mock={"tokens": 1_000_000},
        stream_buffer_events=16,
        stream_hold_ms=300,
    )
    with svc.running() as http, httpx.Client(base_url=svc.url, timeout=GUARD_S) as other:
        stalled = submit(http, {"prompt": "stall", "max_tokens": 32768})["task_id"]
        with open_stream(other, stalled) as reader:
            reader.until(lambda f: f.event == "token")
            wait_idle(svc, http)  # the one slot is free again although the reader never came back
            after = submit(http, {"prompt": "next", "max_tokens": 3})["task_id"]
            frames = parse_sse(http.get(f"/v1/tasks/{after}/stream").content)
            assert check_order(frames).event == "end" and frames[0].data["replica_id"] == "m0"
