"""Tolerant reader: every optional member of every stream item, as the engine specs declare them, may be missing,
and unknown members may appear, and a task still ends with `end` and all its text. Engines change these
informational payloads between minor releases (an older llama-server sends `timings` without `cache_n` or the
per-token rates); a generation must never fail for that.

The items come from real recordings where we have them (llama-server transcripts, TGI's snapshots), else from the
engines' documented formats (vLLM, Triton)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from llama_orch_gen.contracts.task_request import TaskRequest

from llama_orch.adapters.http_policy import HttpPolicy
from tests.adapters.helpers import run_task
from tests.adapters.replay import TGI_SNAPSHOTS, TRANSCRIPTS, sse_payloads
from tests.adapters.test_tgi_replay import generate_results, stream_body
from tests.adapters.wire_fakes import DIALECTS, Dialect, Fake

SPECS = Path(__file__).resolve().parents[2] / "specs" / "engines"
ITEMS = {
    "llamacpp": "CompletionChunk",
    "vllm": "CompletionChunk",
    "tgi": "StreamResponse",
    "triton": "GenerateResponse",
}
PREFIX = {"tgi": "data:"}
DONE = {"vllm": "[DONE]"}


def _recorded(engine: str) -> list[dict[str, Any]]:
    """The stream items of one whole generation."""
    if engine == "llamacpp":
        body = TRANSCRIPTS / "completion_stream_timings.body"
        assert body.exists(), f"missing recording {body}"
        return [p for p in sse_payloads(body.read_bytes()) if isinstance(p, dict)]
    if engine == "tgi":
        results = generate_results()
        assert results, f"no TGI snapshots under {TGI_SNAPSHOTS}"
        return sse_payloads(stream_body(results[0][1]))
    if engine == "vllm":  # as vLLM documents it: tokens, the finish_reason chunk, the usage chunk
        chunk = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m"}
        tokens = [
            {**chunk, "choices": [{"index": 0, "text": t, "logprobs": None, "finish_reason": None}]} for t in "Hi!"
        ]
        last = {**chunk, "choices": [{"index": 0, "text": "", "finish_reason": "stop", "stop_reason": None}]}
        usage = {**chunk, "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}}
        return [*tokens, last, usage]
    return [{"model_name": "ensemble", "model_version": "1", "sequence_end": False, "text_output": t} for t in "Hi!"]


def _strip(value: Any, schema: dict[str, Any], components: dict[str, Any]) -> Any:
    """`value` with every member its schema does not require removed, recursively."""
    schema = _resolve(schema, components)
    if isinstance(value, dict) and "properties" in schema:
        required = set(schema.get("required", ()))
        return {
            key: _strip(member, schema["properties"].get(key, {}), components)
            for key, member in value.items()
            if key in required
        }
    if isinstance(value, list) and "items" in schema:
        return [_strip(member, schema["items"], components) for member in value]
    return value


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return _resolve(components[schema["$ref"].rsplit("/", 1)[-1]], components)
    for key in ("anyOf", "oneOf"):  # a nullable member: the non-null branch
        branches = [b for b in schema.get(key, ()) if b.get("type") != "null"]
        if len(branches) == 1:
            return _resolve(branches[0], components)
    return schema


def _text(engine: str, items: list[dict[str, Any]]) -> str:
    if engine == "llamacpp":
        return "".join(i["content"] for i in items)
    if engine == "tgi":
        return "".join(i["token"]["text"] for i in items if not i["token"].get("special"))
    if engine == "vllm":
        return "".join(c["text"] for i in items for c in i["choices"])
    return "".join(i["text_output"] for i in items)


async def _run(dialect: Dialect, items: list[dict[str, Any]]) -> Any:
    prefix = PREFIX.get(dialect.engine, "data: ")
    lines = [f"{prefix}{json.dumps(item, ensure_ascii=False)}\n\n" for item in items]
    if dialect.engine in DONE:
        lines.append(f"{prefix}{DONE[dialect.engine]}\n\n")
    fake = Fake(dialect, [])
    fake.script.append(fake.stream(["".join(lines).encode()]))
    adapter = fake.adapter(HttpPolicy())
    try:
        return await run_task(adapter, TaskRequest(prompt="Hello", task_id="t", max_tokens=len(items) + 8))
    finally:
        await adapter.aclose()


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.engine)
async def test_items_with_only_their_required_members_still_end(dialect: Dialect) -> None:
    spec = yaml.safe_load((SPECS / f"{dialect.engine}.openapi.yaml").read_text())
    components = spec["components"]["schemas"]
    items = _recorded(dialect.engine)
    stripped = [_strip(item, components[ITEMS[dialect.engine]], components) for item in items]
    assert stripped != items  # the recordings do carry optional members
    outcome = await _run(dialect, stripped)
    assert outcome.code in ("end:stop", "end:length"), outcome.events[-1]
    assert outcome.text == _text(dialect.engine, items)


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.engine)
async def test_unknown_members_are_ignored(dialect: Dialect) -> None:
    items = [{**item, "x_new_in_next_release": {"nested": [1, 2]}} for item in _recorded(dialect.engine)]
    outcome = await _run(dialect, items)
    assert outcome.code in ("end:stop", "end:length"), outcome.events[-1]
    assert outcome.text == _text(dialect.engine, items)


def test_unknown_members_stay_accessible_on_the_generated_items() -> None:
    from llama_orch_gen.engines.llamacpp import wire

    chunk = wire.CompletionChunk.model_validate({"content": "x", "stop": False, "added_later": 1})
    assert chunk.model_extra == {"added_later": 1}


# What each mapper reads to produce the event stream: the most a stream item schema may require. The control
# answers that health and dispatch read (tests/adapters/test_tolerant_control.py) are held to the same rule.
MAPPER_NEEDS = {
    "llamacpp": {
        "CompletionChunk": {"content", "stop"},
        "Timings": set(),
        "TextCompletionChunk": {"choices"},
        "PropsResponse": set(),
        "Slot": {"is_processing"},
        "GenerationSettings": set(),
    },
    "vllm": {
        "CompletionChunk": {"choices"},
        "CompletionChunkChoice": {"text"},
        "Usage": set(),
        "VersionResponse": {"version"},
        "ModelList": {"data"},
        "ModelCard": {"id"},
    },
    "tgi": {
        "StreamResponse": {"token", "generated_text"},
        "Token": {"text"},
        "StreamDetails": set(),
        "Info": {"model_id", "version"},
    },
    "triton": {"GenerateResponse": {"text_output"}, "ServerMetadata": {"version"}, "ModelMetadata": {"name"}},
}


@pytest.mark.parametrize("engine", sorted(MAPPER_NEEDS))
def test_stream_items_require_only_what_the_mappers_read(engine: str) -> None:
    components = yaml.safe_load((SPECS / f"{engine}.openapi.yaml").read_text())["components"]["schemas"]
    for name, needed in MAPPER_NEEDS[engine].items():
        required = set(components[name].get("required", ()))
        assert required <= needed, f"{engine} {name} requires {sorted(required - needed)}, which no mapper reads"


async def test_an_older_llama_server_final_chunk_ends_the_task() -> None:
    """Builds before `cache_n` and the per-token rates: `timings` has the counts and times only."""
    (llamacpp,) = [d for d in DIALECTS if d.engine == "llamacpp"]
    items = _recorded("llamacpp")
    final = dict(items[-1])
    final["timings"] = {k: final["timings"][k] for k in ("prompt_n", "prompt_ms", "predicted_n", "predicted_ms")}
    outcome = await _run(llamacpp, [*items[:-1], final])
    assert outcome.code in ("end:stop", "end:length"), outcome.events[-1]
    assert outcome.text == _text("llamacpp", items)
