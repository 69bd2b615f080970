"""Every real llama-server and vLLM recording parses through the engine's GENERATED client into typed objects.

Recordings are discovered at run time and routed to the generated operation by method and path through the
spec, so a recording added later is checked the same way. The client talks to `httpx.MockTransport`, which
serves the recorded status, headers and body bytes, split into small chunks as a network would.
"""

from __future__ import annotations

import importlib
import inspect
import json
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from llama_orch_devtools.vllm_record import FIXTURES as VLLM_RECORDINGS
from llama_orch_runtime.streaming import StreamDecodeError, StreamStatusError, StreamTruncated

from .spec_support import engines_reference_dir, find_operation, load_spec

FOLDERS = {"llamacpp": engines_reference_dir() / "llamacpp-transcripts", "vllm": VLLM_RECORDINGS}


@dataclass(frozen=True)
class Recording:
    engine: str
    name: str
    method: str
    path: str
    headers: dict[str, str]
    json_body: Any
    status: int
    response_headers: dict[str, str]
    body: bytes

    @property
    def streams(self) -> bool:
        return isinstance(self.json_body, dict) and self.json_body.get("stream") is True

    @property
    def generated(self) -> str:
        return f"llama_orch_gen.engines.{self.engine}"

    def module(self, name: str) -> ModuleType:
        return importlib.import_module(f"{self.generated}.{name}")


def _recordings(engine: str, folder: Path) -> list[Recording]:
    found = []
    for meta_path in sorted(folder.glob("*.json")):
        meta = json.loads(meta_path.read_text())
        request, response = meta["request"], meta["response"]
        found.append(
            Recording(
                engine=engine,
                name=meta_path.stem,
                method=request["method"],
                path=request["path"],
                headers=request.get("headers") or {},
                json_body=request.get("json"),
                status=response["status"],
                response_headers=response.get("headers") or {},
                body=meta_path.with_suffix(".body").read_bytes(),
            )
        )
    return found


RECORDINGS = [recording for engine, folder in FOLDERS.items() for recording in _recordings(engine, folder)]
STREAMED = [r for r in RECORDINGS if r.streams and r.status == 200]


def _client(recording: Recording, body: bytes | None = None, chunk: int = 7) -> Any:
    content = recording.body if body is None else body

    def handle(request: httpx.Request) -> httpx.Response:
        assert (request.method, request.url.path) == (recording.method, recording.path.split("?")[0])
        parts = [content[i : i + chunk] for i in range(0, len(content), chunk)] or [b""]
        return httpx.Response(recording.status, headers=recording.response_headers, stream=_Parts(parts))

    client = recording.module("client").Client(base_url="http://llama.test", headers=recording.headers)
    client.set_httpx_client(httpx.Client(base_url="http://llama.test", transport=httpx.MockTransport(handle)))
    client.set_async_httpx_client(
        httpx.AsyncClient(base_url="http://llama.test", transport=httpx.MockTransport(handle))
    )
    return client


class _Parts(httpx.SyncByteStream, httpx.AsyncByteStream):
    def __init__(self, parts: list[bytes]) -> None:
        self._parts = parts

    def __iter__(self) -> Iterator[bytes]:
        yield from self._parts

    async def __aiter__(self) -> Any:
        for part in self._parts:
            yield part


def _operation_module(recording: Recording) -> ModuleType:
    op = find_operation(load_spec(recording.engine), recording.method, recording.path.split("?")[0])
    assert op is not None, f"{recording.name}: {recording.method} {recording.path} is in no operation of the spec"
    return recording.module(f"api.{op.node['tags'][0]}.{op.node['operationId']}")


def _body_model(module: ModuleType, recording: Recording) -> Any:
    """The typed request body; of a union (vLLM's /tokenize: a prompt or messages), the first member it fits."""
    body_type = inspect.signature(module.sync_detailed).parameters["body"].annotation
    for member in typing.get_args(body_type) or (body_type,):
        try:
            return member.from_dict(recording.json_body)
        except (KeyError, TypeError, ValueError):
            continue
    raise AssertionError(f"{recording.name}: the request fits no body type of {module.__name__}")


def _is_valid_body(module: ModuleType, recording: Recording) -> bool:
    try:
        _body_model(module, recording)
    except AssertionError:
        return False
    return True


def _payloads(body: bytes) -> list[Any]:
    """Independent oracle: the JSON payloads of the SSE body, `[DONE]` left out."""
    lines = body.decode("utf-8").splitlines()
    datas = [line[5:].strip() for line in lines if line.startswith("data:")]
    return [json.loads(data) for data in datas if data != "[DONE]"]


def _as_json(item: BaseModel) -> Any:
    return item.model_dump(mode="json", by_alias=True, exclude_unset=True)


def _is_unknown_route(recording: Recording) -> bool:
    return find_operation(load_spec(recording.engine), recording.method, recording.path.split("?")[0]) is None


def _error_model(recording: Recording) -> type[BaseModel]:
    model: type[BaseModel] = recording.module("models").ErrorResponse
    return model


@pytest.mark.parametrize("recording", RECORDINGS, ids=[f"{r.engine}-{r.name}" for r in RECORDINGS])
def test_recording_parses_into_typed_objects(recording: Recording) -> None:
    if _is_unknown_route(recording):
        # The spec's `x-unknown-route` says what any other path answers; it parses as that typed body.
        spec = load_spec(recording.engine)
        assert recording.status == spec["x-unknown-route"]["status"]
        response = spec["components"]["responses"][spec["x-unknown-route"]["response"]]
        schema = response["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        parsed = getattr(recording.module("wire"), schema).model_validate_json(recording.body)
        assert _as_json(parsed) == json.loads(recording.body)
        return
    module = _operation_module(recording)
    if recording.streams and recording.status == 200:
        _check_stream(module, recording)
    elif recording.streams:
        _check_refused_stream(module, recording)
    else:
        _check_plain(module, recording)


def _check_stream(module: ModuleType, recording: Recording) -> None:
    body = _body_model(module, recording)
    items = list(module.stream(client=_client(recording), body=body))
    expected = _payloads(recording.body)
    assert [_as_json(i) for i in items] == expected, "a field was dropped or changed on the way"
    error_item = recording.module("wire").ErrorResponse
    assert all(isinstance(i, BaseModel) and not isinstance(i, error_item) for i in items)
    for chunk in (1, 3, 64):
        assert [_as_json(i) for i in module.stream(client=_client(recording, chunk=chunk), body=body)] == expected


async def test_async_streams_match_sync_streams() -> None:
    assert {r.engine for r in STREAMED} == set(FOLDERS), "the transcripts hold stream recordings"
    for recording in STREAMED:
        module = _operation_module(recording)
        body = _body_model(module, recording)
        items = [i async for i in await module.astream(client=_client(recording, chunk=5), body=body)]
        assert [_as_json(i) for i in items] == _payloads(recording.body), recording.name


def _check_refused_stream(module: ModuleType, recording: Recording) -> None:
    with pytest.raises(StreamStatusError) as caught:
        module.stream(client=_client(recording), body=_body_model(module, recording))
    assert caught.value.status_code == recording.status
    error = caught.value.parsed
    assert isinstance(error, _error_model(recording))
    assert error.to_dict() == json.loads(recording.body)


def _check_plain(module: ModuleType, recording: Recording) -> None:
    client = _client(recording)
    if recording.method == "POST" and not _is_valid_body(module, recording):
        # Not a valid body (empty JSON, a required field missing): only the answer can go through the parser.
        response = module._build_response(
            client=client, response=httpx.Response(recording.status, content=recording.body)
        )
    elif "body" in inspect.signature(module.sync_detailed).parameters:
        response = module.sync_detailed(client=client, body=_body_model(module, recording))
    else:
        response = module.sync_detailed(client=client)
    assert response.status_code == recording.status
    parsed = response.parsed
    if not recording.body:  # vLLM's /health
        assert parsed is None
        return
    assert parsed is not None, f"{recording.name}: status {recording.status} has no typed body in the client"
    if isinstance(parsed, str):  # text bodies (Prometheus metrics)
        assert parsed == recording.body.decode()
        assert any(line.startswith(f"{recording.engine}:") for line in parsed.splitlines())
        return
    parsed_json = [p.to_dict() for p in parsed] if isinstance(parsed, list) else parsed.to_dict()
    assert parsed_json == json.loads(recording.body), "a field was dropped or changed on the way"
    if recording.status >= 400:
        assert isinstance(parsed, _error_model(recording))


@pytest.mark.parametrize("recording", STREAMED, ids=lambda r: f"{r.engine}-{r.name}")
def test_stream_cut_before_its_end_is_reported_truncated(recording: Recording) -> None:
    module = _operation_module(recording)
    events = recording.body.split(b"\n\n")
    cut = b"\n\n".join(e for e in events if e.strip() and b"[DONE]" not in e and b'"stop":true' not in e)
    if b"[DONE]" not in recording.body:  # native streams end with their `stop: true` chunk instead
        assert b'"stop":true' in recording.body
    with pytest.raises(StreamTruncated):
        list(module.stream(client=_client(recording, body=cut + b"\n\n"), body=_body_model(module, recording)))


@pytest.mark.parametrize("recording", STREAMED, ids=lambda r: f"{r.engine}-{r.name}")
def test_corrupted_chunk_is_a_decode_error(recording: Recording) -> None:
    module = _operation_module(recording)
    corrupted = recording.body.replace(b"data: {", b"data: {oops", 1)
    with pytest.raises(StreamDecodeError):
        list(module.stream(client=_client(recording, body=corrupted), body=_body_model(module, recording)))


def test_every_kind_of_recording_is_covered() -> None:
    """The llama.cpp transcripts span streams, errors and the read-only routes the issue names (the vLLM
    recordings are the recorder's cases: tests/simulators/test_vllm_recorder.py)."""
    llamacpp = [r for r in RECORDINGS if r.engine == "llamacpp"]
    statuses = {r.status for r in llamacpp}
    assert {200, 400, 401, 404, 503} <= statuses
    paths = {r.path for r in llamacpp}
    assert {"/props", "/slots", "/health", "/v1/models", "/metrics", "/completion"} <= paths
