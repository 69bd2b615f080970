"""The engine specs (specs/engines/*.openapi.yaml) are valid OpenAPI 3.1, follow the conventions of
specs/README.md, and describe what real engines send: every llama.cpp recording and every TGI snapshot
in the shared reference data, and every vLLM recording in the fixtures, validates against the matching
schema."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator

from codegen.validate import STREAM_KEYS
from llama_orch_devtools.vllm_record import FIXTURES as VLLM_RECORDINGS
from tests.support.recordings import Recording

from .spec_support import (
    ENGINES,
    Json,
    Spec,
    check_exchange,
    component_pointer,
    engines_reference_dir,
    find_operation,
    load_spec,
    media_schema_pointer,
    operations,
    pointer,
    resolve,
    schema_errors,
)

SNAKE_CASE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
PASCAL_CASE = re.compile(r"^[A-Z][a-zA-Z0-9]*$")
STREAM_MEDIA_TYPES = ("text/event-stream", "application/x-ndjson")


# --- the documents themselves ----------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
def test_spec_is_valid_openapi_31(engine: str) -> None:
    spec = load_spec(engine)
    assert spec["openapi"] == "3.1.0"
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in OpenAPIV31SpecValidator(spec).iter_errors()
    ]
    assert errors == []


@pytest.mark.parametrize("engine", ENGINES)
def test_spec_records_engine_version(engine: str) -> None:
    spec = load_spec(engine)
    assert spec["info"]["version"].strip()
    source = spec.get("x-engine-version-source")
    assert isinstance(source, str) and source.startswith("/") and "#" in source
    route = source.split("#", 1)[0]
    assert find_operation(spec, "get", route) is not None, f"x-engine-version-source names no GET route: {route}"


@pytest.mark.parametrize("engine", ENGINES)
def test_operation_ids_are_unique_snake_case(engine: str) -> None:
    ids = [op.node.get("operationId") for op in operations(load_spec(engine))]
    assert all(isinstance(i, str) and SNAKE_CASE.match(i) for i in ids), ids
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("engine", ENGINES)
def test_component_names_are_pascal_case(engine: str) -> None:
    components = load_spec(engine).get("components", {})
    names = [name for group in ("schemas", "responses") for name in components.get(group, {})]
    assert [n for n in names if not PASCAL_CASE.match(n)] == []


def _walk(node: Json, path: str = "") -> Iterator[tuple[str, Json]]:
    yield path, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _walk(value, f"{path}/{index}")


@pytest.mark.parametrize("engine", ENGINES)
def test_schemas_use_31_style_and_stay_open(engine: str) -> None:
    """No OpenAPI 3.0 `nullable`; engine payloads are never closed with `additionalProperties: false`."""
    spec = load_spec(engine)
    offenders = [
        path
        for path, node in _walk(spec)
        if isinstance(node, dict) and (node.get("nullable") is not None or node.get("additionalProperties") is False)
    ]
    assert offenders == []


def _stream_media(spec: Spec) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
    for op in operations(spec):
        for status, response in op.node.get("responses", {}).items():
            for media, media_object in (response.get("content") or {}).items():
                if media in STREAM_MEDIA_TYPES:
                    yield f"{op.label} {status}", media, media_object


def _refs_in(schema: Json) -> set[str]:
    return {node["$ref"] for _, node in _walk(schema) if isinstance(node, dict) and isinstance(node.get("$ref"), str)}


@pytest.mark.parametrize("engine", ENGINES)
def test_streaming_media_types_follow_x_stream_convention(engine: str) -> None:
    spec = load_spec(engine)
    schemas = spec["components"]["schemas"]
    problems: list[str] = []
    found = list(_stream_media(spec))
    assert found, "every engine spec declares at least one stream"
    for where, media, media_object in found:
        stream = media_object.get("x-stream")
        if not isinstance(stream, dict):
            problems.append(f"{where}: no inline x-stream")
            continue
        problems += [f"{where}: unknown x-stream key {key}" for key in set(stream) - STREAM_KEYS]
        expected_framing = "sse" if media == "text/event-stream" else "ndjson"
        if stream.get("framing") != expected_framing:
            problems.append(f"{where}: framing {stream.get('framing')!r} for {media}")
        named = [stream.get("item"), *([stream["error"]] if "error" in stream else [])]
        problems += [f"{where}: x-stream names unknown component {n!r}" for n in named if n not in schemas]
        if "final" in stream and not ({"equals", "not-null"} & set(stream["final"]) and "field" in stream["final"]):
            problems.append(f"{where}: final needs field and equals or not-null")
        if "error-key" in stream and "error" not in stream:
            problems.append(f"{where}: error-key without an error component")
        schema = media_object.get("schema", {})
        if media == "text/event-stream":
            data = schema.get("properties", {}).get("data", {})
            if "done" in stream:  # the sentinel is one branch, the JSON payload the other
                sentinel, data = data.get("anyOf", [{}, {}])
                if sentinel.get("const") != stream["done"]:
                    problems.append(f"{where}: SSE data must be anyOf [{{const: {stream['done']!r}}}, JSON payload]")
            if "data" not in schema.get("required", []) or data.get("contentMediaType") != "application/json":
                problems.append(f"{where}: SSE item schema must be {{event?, data}} with JSON contentMediaType")
            refs = _refs_in(data.get("contentSchema", {}))
        else:
            refs = _refs_in(schema)
        wanted = {f"#/components/schemas/{n}" for n in named if isinstance(n, str)}
        if not wanted <= refs:
            problems.append(f"{where}: contentSchema does not reference {sorted(wanted - refs)}")
    assert problems == []


@pytest.mark.parametrize("engine", ENGINES)
def test_json_media_type_comes_before_stream(engine: str) -> None:
    """Operations that answer JSON or SSE depending on `stream` list application/json first."""
    for op in operations(load_spec(engine)):
        for response in op.node.get("responses", {}).values():
            media = list(response.get("content") or {})
            if "application/json" in media and "text/event-stream" in media:
                assert media.index("application/json") < media.index("text/event-stream"), op.label


# --- recordings from real servers (llama.cpp, vLLM) ---------------------------------------------------


RECORDINGS_DIRS = {"llamacpp": engines_reference_dir() / "llamacpp-transcripts", "vllm": VLLM_RECORDINGS}
RECORDINGS = [(engine, path) for engine, folder in RECORDINGS_DIRS.items() for path in sorted(folder.glob("*.json"))]


@pytest.mark.parametrize("engine", RECORDINGS_DIRS)
def test_recordings_are_present(engine: str) -> None:
    assert any(e == engine for e, _ in RECORDINGS), f"no recordings under {RECORDINGS_DIRS[engine]}"


@pytest.mark.parametrize(("engine", "meta_path"), RECORDINGS, ids=[f"{e}-{p.stem}" for e, p in RECORDINGS])
def test_recording_matches_spec(engine: str, meta_path: Path) -> None:
    """The recorded response validates against the spec's response for its path, method, status and
    content type; a successful request also validates against the request schema."""
    recording = Recording.load(meta_path)
    problems = check_exchange(
        engine, recording.method, recording.path, recording.status, recording.content_type, recording.body
    )
    assert problems == []

    spec = load_spec(engine)
    op = find_operation(spec, recording.method, recording.path)
    if op is not None and 200 <= recording.status < 300 and recording.request_json is not None:
        body = resolve(spec, op.node.get("requestBody", {}))
        assert "application/json" in body.get("content", {}), f"{op.label} declares no JSON request body"
        request_pointer = media_schema_pointer(op.pointer + "/requestBody", spec, "application/json")
        assert schema_errors(engine, request_pointer, recording.request_json) == []


# --- TGI snapshots --------------------------------------------------------------------------------

TGI_SNAPSHOTS = sorted((engines_reference_dir() / "tgi-snapshots").rglob("*.json"))


def _tgi_json_schema(path: str, status: str = "200") -> str:
    return pointer("paths", path, "post", "responses", status, "content", "application/json", "schema")


def _tgi_stream_item(path: str) -> str:
    media = load_spec("tgi")["paths"][path]["post"]["responses"]["200"]["content"]["text/event-stream"]
    return component_pointer(media["x-stream"]["item"])


def _tgi_stream_error(path: str) -> str:
    media = load_spec("tgi")["paths"][path]["post"]["responses"]["200"]["content"]["text/event-stream"]
    return component_pointer(media["x-stream"]["error"])


def tgi_schema_for(entry: Json) -> tuple[str, str]:
    """(what the entry is, schema pointer in the TGI spec), decided from the entry's shape alone."""
    if not isinstance(entry, dict):
        raise AssertionError(f"snapshot entry is not an object: {type(entry).__name__}")
    kind = entry.get("object")
    if kind == "chat.completion":
        return "chat completion", _tgi_json_schema("/v1/chat/completions")
    if kind == "chat.completion.chunk":
        return "chat completion chunk", _tgi_stream_item("/v1/chat/completions")
    if kind == "text_completion":
        if entry.get("usage") is not None:
            return "text completion", _tgi_json_schema("/v1/completions")
        return "text completion chunk", _tgi_stream_item("/v1/completions")
    if "token" in entry and "index" in entry:
        return "generate_stream event", _tgi_stream_item("/generate_stream")
    if "generated_text" in entry:
        return "generate response", _tgi_json_schema("/generate")
    if isinstance(entry.get("error"), str):
        return "generate_stream error", _tgi_stream_error("/generate_stream")
    if isinstance(entry.get("error"), dict):
        return "chat stream error", _tgi_stream_error("/v1/chat/completions")
    raise AssertionError(f"unrecognised TGI snapshot shape with keys {sorted(entry)}")


def _snapshot_id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def test_tgi_snapshots_are_present() -> None:
    assert TGI_SNAPSHOTS, f"no snapshots under {engines_reference_dir() / 'tgi-snapshots'}"


@pytest.mark.parametrize("snapshot", TGI_SNAPSHOTS, ids=[_snapshot_id(p) for p in TGI_SNAPSHOTS])
def test_tgi_snapshot_matches_spec(snapshot: Path) -> None:
    """Each recorded TGI response or stream chunk (a file holds one, or a list of them) validates
    against the TGI spec schema that its shape belongs to."""
    content = json.loads(snapshot.read_text(encoding="utf-8"))
    entries = content if isinstance(content, list) else [content]
    problems: list[str] = []
    for index, entry in enumerate(entries):
        kind, schema = tgi_schema_for(entry)
        problems += [f"entry {index} ({kind}): {p}" for p in schema_errors("tgi", schema, entry)]
    assert problems == []
