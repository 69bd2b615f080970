"""Every recorded llama-server stream and error replays through the adapter: exact text, contiguous indices,
one terminal event, the right code. Recordings are discovered at runtime (new ones are picked up)."""

from __future__ import annotations

import json

import pytest
from llama_orch_gen.contracts.events import EndEvent
from llama_orch_gen.contracts.task_request import TaskRequest

from llama_orch.adapters.http_policy import HttpPolicy
from llama_orch.adapters.llamacpp import LlamaCppAdapter
from tests.adapters.helpers import run_task
from tests.adapters.replay import Recording, llamacpp_recordings, respond, sse_payloads, transport

COMPLETION_PATHS = {"/completion": "native", "/completions": "native", "/v1/completions": "openai"}
PROPS = next(r for r in llamacpp_recordings() if r.name == "props")
NO_RETRY = HttpPolicy(max_attempts=1)

streams = [
    r
    for r in llamacpp_recordings()
    if r.path in COMPLETION_PATHS and r.status == 200 and r.request["json"].get("stream")
]
refusals = [r for r in llamacpp_recordings() if r.path in COMPLETION_PATHS and r.status != 200]


def adapter_for(recording: Recording, chunk: int) -> LlamaCppAdapter:
    routes = {
        recording.path: respond(recording.status, recording.body, recording.content_type, chunk),
        "/props": respond(200, PROPS.body, "application/json", 4096),
    }
    if recording.path == "/completions":  # the adapter speaks /completion; same handler on the server
        routes["/completion"] = routes.pop("/completions")
    return LlamaCppAdapter(
        "p",
        "r0",
        base_url="http://engine",
        api=COMPLETION_PATHS[recording.path],  # type: ignore[arg-type]
        policy=NO_RETRY,
        transport=transport(routes),
    )


def expected_text(recording: Recording) -> str:
    text = []
    for payload in sse_payloads(recording.body):
        if "content" in payload:
            text.append(payload["content"])
        for choice in payload.get("choices", []):
            text.append(choice.get("text", ""))
    return "".join(text)


def test_recordings_are_found() -> None:
    assert streams and refusals


@pytest.mark.parametrize("chunk", [1, 5, 4096])
@pytest.mark.parametrize("recording", streams, ids=lambda r: r.name)
async def test_recorded_stream_replays_exactly(recording: Recording, chunk: int) -> None:
    adapter = adapter_for(recording, chunk)
    outcome = await run_task(adapter, TaskRequest(task_id="t", prompt=recording.request["json"].get("prompt", "")))
    await adapter.aclose()
    assert outcome.text == expected_text(recording)
    end = outcome.terminal
    assert isinstance(end, EndEvent), outcome.events[-1]
    final = sse_payloads(recording.body)[-1]
    if "stop_type" in final:
        assert end.data.tokens_out == final["tokens_predicted"] and end.data.tokens_in == final["tokens_evaluated"]
        assert end.data.finish_reason == ("length" if final["stop_type"] == "limit" else "stop")
        assert end.data.decode_time_ms == final["timings"]["predicted_ms"]
    started = outcome.events[0].root
    assert started.event == "started" and started.data.engine_version == json.loads(PROPS.body)["build_info"]


def expected_code(recording: Recording) -> str:
    error = json.loads(recording.body)["error"]
    return {
        "exceed_context_size_error": "INVALID_PARAMS",
        "invalid_request_error": "INVALID_PARAMS",
        "authentication_error": "UPSTREAM_AUTH",
        "unavailable_error": "POOL_UNREADY",
    }.get(error["type"], "INTERNAL")


@pytest.mark.parametrize("recording", refusals, ids=lambda r: r.name)
async def test_recorded_refusal_maps_to_its_code(recording: Recording) -> None:
    adapter = adapter_for(recording, 4096)
    outcome = await run_task(adapter, TaskRequest(task_id="t", prompt="x"))
    await adapter.aclose()
    assert outcome.code == expected_code(recording)
    assert [e.root.event for e in outcome.events] == ["error"]
