"""`llama-orch serve --engine vllm` (a real process) in front of a real vLLM, side by side with direct calls; and
the engine failing under the orchestrator: killed mid-stream, its engine core dying, loading again."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jinja2
import pytest

from llama_orch.adapters.vllm import engine_load
from llama_orch_devtools.tiny_hf import CHAT_TEMPLATE
from tests.real.stack import Run, orchestrator, run_task, submit
from tests.support.engine_process import processes
from tests.support.polling import wait_for
from tests.support.serve_process import Serve
from tests.support.vllm_server import VllmServer
from tests.vllm.direct import chat, complete, sampling

pytestmark = pytest.mark.real_vllm

WAIT_S = 30.0  # hang guard for polled conditions, never a speed assertion


@pytest.fixture(scope="module")
def serve(vllm_server: VllmServer) -> Iterator[Serve]:
    args = ["--engine", "vllm", "--engine-url", vllm_server.base_url, "--model", vllm_server.served_name]
    with Serve(args) as process:
        assert wait_for(lambda: _pool_ready(process.base_url), WAIT_S), process.log_tail()
        yield process


def _pool_ready(base_url: str, pool_id: str = "default") -> bool:
    answer = httpx.get(f"{base_url}/v1/pools/{pool_id}/health", timeout=5)
    return answer.status_code == 200 and any(r["ready"] for r in answer.json()["replicas"])


def _task_text(base_url: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Tokens and the terminal event of one task over `/v1/tasks` + its SSE stream."""
    with httpx.Client(base_url=base_url, timeout=60) as client:
        admitted = client.post("/v1/tasks", json=body)
        assert admitted.status_code == 202, admitted.text
        events: list[tuple[str, Any]] = []
        with client.stream("GET", f"/v1/tasks/{admitted.json()['task_id']}/stream") as stream:
            kind = ""
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    events.append((kind, json.loads(line[6:])))
    assert [k for k, _ in events].count("end") + [k for k, _ in events].count("error") == 1, events
    return "".join(d["t"] for k, d in events if k == "token"), events[-1][1] | {"event": events[-1][0]}


def _infer_text(base_url: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    lines = []
    with httpx.stream("POST", f"{base_url}/infer", json={**body, "stream": True}, timeout=60) as response:
        assert response.status_code == 200
        lines = [json.loads(line) for line in response.iter_lines() if line]
    return "".join(line.get("token", "") for line in lines), lines[-1]


CASES = [("Orchestrators route", None, 0.0), ("Hello, world!", 7, 0.8), ("naïve café", 42, 1.0)]


@pytest.mark.parametrize(("prompt", "seed", "temperature"), CASES)
def test_tasks_and_infer_give_the_engines_own_text(
    serve: Serve, vllm_server: VllmServer, prompt: str, seed: int | None, temperature: float
) -> None:
    body: dict[str, Any] = {"prompt": prompt, "max_tokens": 20, "temperature": temperature}
    if seed is not None:
        body["seed"] = seed
    direct, usage = complete(vllm_server, prompt, 20, **sampling(seed, temperature))
    tasks, end = _task_text(serve.base_url, body)
    infer, done = _infer_text(serve.base_url, body)
    assert tasks == direct == infer
    assert end["event"] == "end"
    assert (end["tokens_in"], end["tokens_out"]) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert done["done"] is True and done["content"] == direct


def test_a_chat_workload_equals_vllms_chat_route(serve: Serve, vllm_server: VllmServer) -> None:
    """Tasks carry raw prompts: a chat turn is the model's chat template rendered into one, which is what vLLM's
    chat route runs (the tiny tokenizer adds no BOS of its own), so the texts agree token for token."""
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Count to three."}]
    prompt = jinja2.Template(CHAT_TEMPLATE).render(messages=messages, add_generation_prompt=True)
    direct, usage = chat(vllm_server, messages, 16, **sampling(3, 0.7))
    tasks, end = _task_text(serve.base_url, {"prompt": prompt, "max_tokens": 16, "seed": 3, "temperature": 0.7})
    assert tasks == direct and end["tokens_in"] == usage["prompt_tokens"]


def test_eight_concurrent_seeded_tasks_through_serve_equal_direct(serve: Serve, vllm_server: VllmServer) -> None:
    seeds = [11, 12, 13, 14, 15, 16, 17, 18]
    results: dict[int, str] = {}

    def one(seed: int) -> None:
        body = {"prompt": "Once upon", "max_tokens": 24, "seed": seed, "temperature": 0.9}
        results[seed] = _task_text(serve.base_url, body)[0]

    threads = [threading.Thread(target=one, args=(s,)) for s in seeds]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert results == {s: complete(vllm_server, "Once upon", 24, **sampling(s, 0.9))[0] for s in seeds}
    assert len(set(results.values())) == len(seeds)


def test_unknown_model_and_over_long_requests_are_typed(vllm_server: VllmServer) -> None:
    pools = [_pool("right", vllm_server), _pool("wrong", vllm_server, model="not-served")]
    with orchestrator(pools) as client:
        over = run_task(client, _task("right", max_tokens=vllm_server.max_model_len + 100))
        assert over.code == "INVALID_PARAMS" and over.tokens == []
        wrong = run_task(client, _task("wrong"))
        assert wrong.code == "MODEL_NOT_SERVED" and wrong.tokens == []


def _pool(pool_id: str, server: VllmServer, model: str | None = None) -> dict[str, Any]:
    replica = {"id": f"{pool_id}-r0", "base_url": server.base_url}
    return {"id": pool_id, "engine": "vllm", "model": model or server.served_name, "replicas": [replica]}


def _task(pool_id: str, max_tokens: int = 8) -> dict[str, Any]:
    return {
        "prompt": "Once upon a time",
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "placement": {"mode": "pin", "pin_pool_id": pool_id},
    }


def _stream_until(client: Any, task_id: str, tokens: int, then: Any) -> list[Any]:
    events: list[Any] = []
    with client.tasks.stream(task_id) as stream:
        for event in stream:
            events.append(event)
            if event.event == "token" and sum(e.event == "token" for e in events) == tokens:
                then()
    return events


def _engine_core_pid(server: VllmServer) -> int:
    """vLLM runs the model in an `EngineCore` child process beside the HTTP server."""
    assert server.process is not None
    parent = server.process.pid
    found = [pid for pid, ppid, command in processes() if ppid == parent and b"EngineCore" in command]
    assert found, "no EngineCore child process found"
    return found[0]


def test_engine_core_death_is_one_typed_error_then_unready_then_ready(vllm_server: VllmServer) -> None:
    """The engine core dying mid-generation: vLLM's HTTP server answers 200 and then writes an error event into the
    stream. The task ends with exactly one typed `error`; while vLLM is down and loading again the pool is
    POOL_UNREADY; once it is back, the same orchestrator serves again."""
    assert vllm_server.process is not None, "needs a vLLM this run started (unset LLAMA_ORCH_VLLM_ATTACH)"
    with orchestrator([_pool("p", vllm_server)]) as client:
        try:
            run = _killed_at_the_first_token(client, lambda: os.kill(_engine_core_pid(vllm_server), signal.SIGKILL))
            assert run.code in ("INTERNAL", "WORKER_RESET"), run.events[-1]
            vllm_server.restart_when_exited()
            loading = run_task(client, _task("p"))
            assert loading.code == "POOL_UNREADY", loading.code
        finally:
            _running_again(vllm_server)
        assert wait_for(lambda: run_task(client, _task("p")).code == "", WAIT_S, 0.2), "never ready again"


def test_vllm_killed_mid_stream_is_worker_reset(vllm_server: VllmServer) -> None:
    assert vllm_server.process is not None, "needs a vLLM this run started (unset LLAMA_ORCH_VLLM_ATTACH)"
    with orchestrator([_pool("p", vllm_server)]) as client:
        try:
            run = _killed_at_the_first_token(client, vllm_server.kill)
            assert run.code == "WORKER_RESET", run.events[-1]
        finally:
            _running_again(vllm_server)
        assert wait_for(lambda: run_task(client, _task("p")).code == "", WAIT_S, 0.2), "never ready again"


def _killed_at_the_first_token(client: Any, kill: Any) -> Run:
    """A long greedy task (a prompt no earlier test used, so no prefix-cache hit) whose engine dies at its first
    token: the tiny model makes 8000 tokens in well under a second, so a later kill could come after the end."""
    body = {**_task("p", max_tokens=8000), "prompt": f"Kill test {os.getpid()} {time.monotonic_ns()}"}
    status, task_id, _ = submit(client, body)
    assert status == 202 and task_id
    run = Run(status, _stream_until(client, task_id, 1, kill))
    assert 1 <= len(run.tokens) < 8000, "the engine finished before it was killed"
    return run


def _running_again(server: VllmServer) -> None:
    """Whatever the test found, later tests get a serving vLLM on the same port: a process still up either loads
    (ready) or, with its engine core dead, exits (then it is started again)."""
    if server.process is not None and server.process.poll() is None:
        try:
            server.wait_ready()
            return
        except RuntimeError:
            pass
    server.start()


def test_the_pool_reads_the_load_vllm_reports(vllm_server: VllmServer) -> None:
    """Replica load comes from vLLM's own running/waiting gauges (the dispatch rules over them are tested with a
    scripted engine in tests/service/test_engine_load.py: the tiny model finishes generating in well under a second,
    too fast to hold a real request in the engine while a test watches)."""
    with orchestrator([_pool("p", vllm_server)]) as client:
        assert wait_for(lambda: "engine_running" in _replica_health(client), WAIT_S), "no engine-reported load"
        replica = _replica_health(client)
        reported = engine_load(httpx.get(f"{vllm_server.base_url}/metrics", timeout=10).content)
        assert reported is not None
        assert (replica["engine_running"], replica["engine_waiting"]) == (reported.running, reported.waiting)


def _replica_health(client: Any) -> dict[str, Any]:
    answer = client.with_raw_response.pools.health("p")  # the wire body: which members the server sent
    assert answer.status_code == 200
    replica: dict[str, Any] = answer.http_response.json()["replicas"][0]
    return replica
