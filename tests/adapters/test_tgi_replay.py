"""TGI's own recorded `/generate` results (its integration-test snapshots, discovered at runtime) replayed as the
`/generate_stream` events TGI sends for them: exact text, contiguous indices, the engine's own numbers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from llama_orch_gen.contracts.events import EndEvent
from llama_orch_gen.contracts.task_request import TaskRequest

from llama_orch.adapters.http_policy import HttpPolicy
from llama_orch.adapters.tgi import TgiAdapter
from tests.adapters.helpers import run_task
from tests.adapters.replay import TGI_SNAPSHOTS, respond, transport
from tests.adapters.wire_fakes import TGI_INFO


def generate_results() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(TGI_SNAPSHOTS.glob("*/*.json")):
        data = json.loads(path.read_text())
        for n, result in enumerate(data if isinstance(data, list) else [data]):
            details = result.get("details") if isinstance(result, dict) else None
            if isinstance(details, dict) and details.get("tokens") and "generated_text" in result:
                found.append((f"{path.stem}#{n}", result))
    return found


RESULTS = generate_results()


def stream_body(result: dict[str, Any]) -> bytes:
    """The `data:` events TGI's router sends for this result (axum: no space after the colon, no [DONE])."""
    details = result["details"]
    tokens = details["tokens"]
    events = []
    for k, token in enumerate(tokens):
        event: dict[str, Any] = {"index": k + 1, "token": token, "generated_text": None, "details": None}
        if k == len(tokens) - 1:
            event["generated_text"] = result["generated_text"]
            event["details"] = {
                "finish_reason": details["finish_reason"],
                "generated_tokens": details["generated_tokens"],
                "input_length": len(details.get("prefill") or []),
                "seed": details.get("seed"),
            }
        events.append(f"data:{json.dumps(event, ensure_ascii=False)}\n\n")
    return "".join(events).encode()


def test_snapshots_are_found() -> None:
    assert len(RESULTS) > 50


@pytest.mark.parametrize(("name", "result"), RESULTS, ids=[name for name, _ in RESULTS])
async def test_snapshot_replays_exactly(name: str, result: dict[str, Any]) -> None:
    routes = {
        "/generate_stream": respond(200, stream_body(result), "text/event-stream", chunk=3),
        "/info": respond(200, json.dumps(TGI_INFO).encode(), "application/json", 4096),
    }
    adapter = TgiAdapter(
        "p", "r0", base_url="http://tgi", policy=HttpPolicy(max_attempts=1), transport=transport(routes)
    )
    outcome = await run_task(adapter, TaskRequest(task_id="t", prompt="x"))
    await adapter.aclose()
    details = result["details"]
    assert outcome.text == "".join(t["text"] for t in details["tokens"] if not t["special"])
    end = outcome.terminal
    assert isinstance(end, EndEvent)
    assert end.data.tokens_out == details["generated_tokens"]
    assert end.data.finish_reason == ("length" if details["finish_reason"] == "length" else "stop")
