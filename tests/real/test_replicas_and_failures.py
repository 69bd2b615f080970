"""Several real llama-server replicas behind one pool, and real engine failures: load spreads, a stopped
replica is skipped and rejoins, a killed engine ends its task with WORKER_RESET, a loading engine is
POOL_UNREADY, a wrong token is UPSTREAM_AUTH, an over-long prompt is INVALID_PARAMS before any token."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from llama_orch_gen.orchestrator import Client

from llama_orch_devtools.tiny_gguf import write_tiny_model
from tests.real.stack import Run, orchestrator, pool, run_task, submit
from tests.support.llama_server import LlamaServer

pytestmark = pytest.mark.real_engine

HEALTH_INTERVAL_MS = 100
WAIT_S = 30.0  # hang guard for conditions we poll; never a speed assertion


def _eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        time.sleep(HEALTH_INTERVAL_MS / 1000)


def _predicted(server: LlamaServer) -> float:
    """Tokens the engine itself says it generated (its Prometheus counter)."""
    text = httpx.get(f"{server.base_url}/metrics", timeout=5).text
    match = re.search(r"^llamacpp:tokens_predicted_total (\S+)$", text, re.M)
    assert match, text
    return float(match.group(1))


def _ready_replicas(client: Client, pool_id: str) -> set[str]:
    health = client.pools.health(pool_id)
    return {r.replica_id for r in health.replicas if r.ready}


def _task(pool_id: str, max_tokens: int = 32, prompt: str = "Hello there") -> dict[str, object]:
    return {"prompt": prompt, "max_tokens": max_tokens, "seed": 5, "placement": {"mode": "pin", "pin_pool_id": pool_id}}


def _run_concurrently(client: Client, bodies: list[dict[str, object]]) -> list[Run]:
    runs: list[Run | None] = [None] * len(bodies)

    def work(i: int) -> None:
        runs[i] = run_task(client, bodies[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(r is not None for r in runs), "a task never finished"
    return [r for r in runs if r is not None]


@pytest.fixture
def three(tiny_model: Path) -> Iterator[list[LlamaServer]]:
    with LlamaServer(tiny_model) as a, LlamaServer(tiny_model) as b, LlamaServer(tiny_model) as c:
        yield [a, b, c]


def test_load_spreads_and_a_stopped_replica_is_skipped_then_rejoins(three: list[LlamaServer]) -> None:
    with orchestrator([pool("spread", three)], health_interval_ms=HEALTH_INTERVAL_MS) as client:
        ids = {f"spread-r{i}" for i in range(3)}
        _eventually(lambda: _ready_replicas(client, "spread") == ids, "all three replicas ready")
        runs = _run_concurrently(client, [_task("spread", 48) for _ in range(12)])
        assert [r.code for r in runs] == [""] * 12
        assert all(_predicted(s) > 0 for s in three), "every replica served a share of the load"
        assert {r.started.replica_id for r in runs} == ids

        three[2].stop()
        _eventually(lambda: "spread-r2" not in _ready_replicas(client, "spread"), "the stopped replica unready")
        runs = _run_concurrently(client, [_task("spread") for _ in range(6)])
        assert [r.code for r in runs] == [""] * 6, "nothing accepted is lost while a replica is down"
        assert "spread-r2" not in {r.started.replica_id for r in runs}

        three[2].start()
        _eventually(lambda: _ready_replicas(client, "spread") == ids, "the restarted replica rejoins")
        before = _predicted(three[2])
        _run_concurrently(client, [_task("spread", 48) for _ in range(9)])
        assert _predicted(three[2]) > before, "the rejoined replica takes work again"


def test_engine_killed_mid_stream_ends_the_task_with_worker_reset(tiny_model: Path) -> None:
    with LlamaServer(tiny_model, ctx_size=4096, parallel=1) as doomed, LlamaServer(tiny_model) as spare:
        with orchestrator([pool("doomed", [doomed]), pool("spare", [spare])]) as client:
            status, task_id, _ = submit(client, _task("doomed", max_tokens=3000))
            assert status == 202 and task_id
            events = []
            with client.tasks.stream(task_id) as stream:
                for event in stream:
                    events.append(event)
                    if sum(e.event == "token" for e in events) == 5:
                        doomed.kill()
            run = Run(status=status, events=events)
            assert run.code == "WORKER_RESET"
            assert 5 <= len(run.tokens) < 3000
            assert run_task(client, _task("spare")).code == "", "the orchestrator keeps serving"


def test_loading_engine_is_pool_unready_then_ready(tmp_path: Path) -> None:
    big = write_tiny_model(tmp_path / "big.gguf", n_embd=1024, n_layer=8)
    server = LlamaServer(big, parallel=1, extra_args=["--load-mode", "none"])
    with orchestrator([pool("slow", [server])], health_interval_ms=50) as client:
        server.start(wait=False)
        try:
            first = run_task(client, _task("slow", max_tokens=4))
            assert first.code == "POOL_UNREADY", f"expected POOL_UNREADY while loading, got {first.code!r}"
            server.wait_ready()
            _eventually(lambda: _ready_replicas(client, "slow") == {"slow-r0"}, "the loaded replica ready")
            assert run_task(client, _task("slow", max_tokens=4)).code == ""
        finally:
            server.close()


def test_wrong_engine_token_is_upstream_auth(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMA_TOKEN_UNDER_TEST", "not-the-key")
    with LlamaServer(tiny_model, api_key="the-real-key", parallel=1) as locked:
        locked_pool = pool("locked", [locked])
        locked_pool["replicas"][0]["bearer_token_env"] = "LLAMA_TOKEN_UNDER_TEST"
        with orchestrator([locked_pool]) as client:
            run = run_task(client, _task("locked"))
            assert run.code == "UPSTREAM_AUTH"
            assert "not-the-key" not in str(run.refusal) + str(run.events)


def test_prompt_over_the_context_is_invalid_params_before_any_token(tiny_model: Path) -> None:
    with LlamaServer(tiny_model, ctx_size=256, parallel=1) as small:
        with orchestrator([pool("small", [small])]) as client:
            run = run_task(client, _task("small", prompt="word " * 400))
            assert run.code == "INVALID_PARAMS"
            assert run.tokens == []
