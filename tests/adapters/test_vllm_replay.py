"""The vLLM adapter reads the real vLLM's recorded bytes (tests/fixtures/vllm-recordings), split anywhere as a
network would: the exact text, the engine's usage and version; each recorded refusal maps to its code."""

from __future__ import annotations

import json

import pytest
from llama_orch_gen.contracts.events import EndEvent
from llama_orch_gen.contracts.task_request import TaskRequest

from llama_orch.adapters.http_policy import HttpPolicy
from llama_orch.adapters.vllm import VllmAdapter
from llama_orch_devtools.vllm_record import FIXTURES
from tests.adapters.helpers import run_task
from tests.adapters.replay import respond, sse_payloads, transport
from tests.support.recordings import Recording

RECORDINGS = [Recording.load(path) for path in sorted(FIXTURES.glob("*.json"))]
VERSION = next(r for r in RECORDINGS if r.path == "/version")
COMPLETIONS = [r for r in RECORDINGS if r.path == "/v1/completions"]
STREAMS = [r for r in COMPLETIONS if r.status == 200 and r.request_json.get("stream")]
REFUSALS = [r for r in COMPLETIONS if r.status != 200]
# What each recorded refusal must become (the adapter sees vLLM's `type` and `param`).
CODES = {
    "error_max_tokens_over_context": "INVALID_PARAMS",
    "error_unknown_model": "MODEL_NOT_SERVED",
    "error_missing_prompt": "INVALID_PARAMS",
}


def _adapter(recording: Recording, chunk: int) -> VllmAdapter:
    routes = {
        "/v1/completions": respond(recording.status, recording.body, recording.content_type, chunk),
        "/version": respond(200, VERSION.body, VERSION.content_type, 4096),
    }
    policy = HttpPolicy(max_attempts=1)
    return VllmAdapter("p", "r0", base_url="http://vllm", policy=policy, transport=transport(routes))


def test_recordings_are_found() -> None:
    assert STREAMS and sorted(r.name for r in REFUSALS) == sorted(CODES)


@pytest.mark.parametrize("chunk", [1, 7, 4096])
@pytest.mark.parametrize("recording", STREAMS, ids=lambda r: r.name)
async def test_recorded_stream_replays_exactly(recording: Recording, chunk: int) -> None:
    adapter = _adapter(recording, chunk)
    outcome = await run_task(adapter, TaskRequest(task_id="t", prompt=recording.request_json["prompt"]))
    await adapter.aclose()
    payloads = sse_payloads(recording.body)
    assert outcome.text == "".join(choice["text"] for p in payloads for choice in p["choices"])
    end = outcome.terminal
    assert isinstance(end, EndEvent), outcome.events[-1]
    finish = next(p["choices"][0]["finish_reason"] for p in reversed(payloads) if p["choices"])
    assert end.data.finish_reason == finish
    if usage := payloads[-1].get("usage"):
        assert (end.data.tokens_in, end.data.tokens_out) == (usage["prompt_tokens"], usage["completion_tokens"])
    started = outcome.events[0].root
    assert started.event == "started" and started.data.engine_version == json.loads(VERSION.body)["version"]


@pytest.mark.parametrize("recording", REFUSALS, ids=lambda r: r.name)
async def test_recorded_refusal_maps_to_its_code(recording: Recording) -> None:
    adapter = _adapter(recording, 4096)
    outcome = await run_task(adapter, TaskRequest(task_id="t", prompt="x"))
    await adapter.aclose()
    assert outcome.code == CODES[recording.name]
    assert [e.root.event for e in outcome.events] == ["error"]
