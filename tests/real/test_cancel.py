"""Cancel on a real engine, through the orchestrator's HTTP API and by client disconnect: the engine's slot
is idle again within a second and no token follows the cancel."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from llama_orch_gen.orchestrator import Client

from tests.real.stack import Run, orchestrator, pool, submit
from tests.support.llama_server import LlamaServer

pytestmark = pytest.mark.real_engine

LONG = {"prompt": "Once upon a time", "max_tokens": 3000, "seed": 1, "placement": {"mode": "pin", "pin_pool_id": "p"}}


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> Iterator[LlamaServer]:
    with LlamaServer(tiny_model, ctx_size=4096, parallel=1) as server:
        yield server


@pytest.fixture(scope="module")
def client(engine: LlamaServer) -> Iterator[Client]:
    # A reader that leaves is waited for (a resume) for stream_hold_ms, then its task is canceled.
    with orchestrator([pool("p", [engine])], stream_hold_ms=300) as client:
        yield client


def _slot_busy(engine: LlamaServer) -> bool:
    return any(slot["is_processing"] for slot in httpx.get(f"{engine.base_url}/slots", timeout=5).json())


def _idle_within_a_second(engine: LlamaServer) -> bool:
    deadline = time.monotonic() + 1.0
    while _slot_busy(engine):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_cancel_through_the_api_frees_the_slot_and_ends_the_stream(client: Client, engine: LlamaServer) -> None:
    status, task_id, _ = submit(client, LONG)
    assert status == 202 and task_id
    events = []
    with client.tasks.stream(task_id) as stream:
        for event in stream:
            events.append(event)
            if sum(e.event == "token" for e in events) == 3:
                assert _slot_busy(engine)
                assert client.with_raw_response.tasks.cancel(task_id).status_code == 204
                assert _idle_within_a_second(engine), "the engine slot is still busy a second after cancel"
    run = Run(status=status, events=events)
    end = run.terminal
    assert end.event == "end" and end.data.finish_reason == "canceled"
    assert len(run.tokens) < LONG["max_tokens"]


def test_client_disconnect_cancels_the_engine_request(client: Client, engine: LlamaServer) -> None:
    status, task_id, _ = submit(client, LONG)
    assert status == 202 and task_id
    tokens = 0
    with client.tasks.stream(task_id) as stream:
        for event in stream:
            tokens += event.event == "token"
            if tokens == 3:
                assert _slot_busy(engine)
                break  # leaving the block closes the connection mid-stream
    assert _idle_within_a_second(engine), "the engine slot is still busy a second after the client left"
