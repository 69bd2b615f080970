"""The generated orchestrator client decodes streams incrementally into typed items, whatever the network does to the
bytes; a stream's items are the member classes of its union (no `.root`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest
from llama_orch_gen.contracts.events import EndEvent, ErrorEvent, StartedEvent, TokenEvent
from llama_orch_gen.contracts.infer_line import InferDone, InferError, InferToken
from llama_orch_gen.orchestrator import (
    APIConnectionError,
    APIResponseValidationError,
    AsyncClient,
    Client,
    NotFoundError,
)
from llama_orch_gen.orchestrator.models import InferRequest

STARTED = {
    "task_id": "t1",
    "queue_position": 0,
    "predicted_start_ms": 0,
    "engine": "llamacpp",
    "engine_version": "b0-unknown",
    "pool_id": "default",
    "replica_id": "r0",
}
TOKENS = ["Hé", "llo", " wörld", " 日本", "🙂"]


def _sse(frames: list[tuple[str, object]], newline: str = "\n") -> bytes:
    out = []
    for event, data in frames:
        out.append(f"event: {event}{newline}data: {json.dumps(data, ensure_ascii=False)}{newline}{newline}")
    return "".join(out).encode()


RECORDED = _sse(
    [("started", STARTED)]
    + [("token", {"t": t, "i": i}) for i, t in enumerate(TOKENS)]
    + [("metrics", {"queue_depth": 0}), ("end", {"tokens_out": 5, "decode_time_ms": 3.5, "finish_reason": "length"})]
)


def _client(body: bytes, split: Callable[[bytes], Iterator[bytes]], status: int = 200) -> Client:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=split(body), headers={"content-type": "text/event-stream"})

    return Client("http://orch", max_retries=0, http_client=httpx.Client(transport=httpx.MockTransport(handler)))


def _every(n: int) -> Callable[[bytes], Iterator[bytes]]:
    return lambda body: (body[i : i + n] for i in range(0, len(body), n))


def _decode(body: bytes, split: Callable[[bytes], Iterator[bytes]]) -> list[object]:
    with _client(body, split).tasks.stream("t1") as events:
        return list(events)


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 64, 10_000])
def test_recorded_sse_decodes_to_typed_events_for_any_chunking(chunk: int) -> None:
    events = _decode(RECORDED, _every(chunk))
    assert [type(e).__name__ for e in events] == ["StartedEvent"] + ["TokenEvent"] * 5 + ["MetricsEvent", "EndEvent"]
    assert isinstance(events[0], StartedEvent) and events[0].data.engine == "llamacpp"
    tokens = [e for e in events if isinstance(e, TokenEvent)]
    assert [t.data.t for t in tokens] == TOKENS and [t.data.i for t in tokens] == list(range(5))
    assert isinstance(events[-1], EndEvent) and events[-1].data.finish_reason == "length"


@pytest.mark.parametrize("newline", ["\r\n", "\r"])
def test_crlf_and_cr_line_ends_split_anywhere(newline: str) -> None:
    body = _sse([("token", {"t": "a", "i": 0}), ("end", {"tokens_out": 1, "decode_time_ms": 0})], newline)
    assert [type(e).__name__ for e in _decode(body, _every(1))] == ["TokenEvent", "EndEvent"]


def test_comments_and_data_without_space_are_understood() -> None:
    body = (
        b': keep-alive\n\nevent:token\ndata:{"t":"x","i":0}\n\n'
        b': ping\nevent: end\ndata: {"tokens_out":1,"decode_time_ms":0}\n\n'
    )
    assert [type(e).__name__ for e in _decode(body, _every(4))] == ["TokenEvent", "EndEvent"]


def test_stream_cut_before_its_terminal_event_is_reported_not_ended_quietly() -> None:
    cut = RECORDED[: RECORDED.index(b"event: end")]
    with pytest.raises(APIConnectionError, match="stream ended before its final item"):
        _decode(cut, _every(9))


def test_error_event_ends_the_stream() -> None:
    body = _sse([("started", STARTED), ("error", {"code": "WORKER_RESET", "message": "lost", "retriable": True})])
    events = _decode(body, _every(5))
    assert isinstance(events[-1], ErrorEvent) and events[-1].data.code == "WORKER_RESET"


def test_invalid_event_payload_is_a_decode_error_naming_the_field() -> None:
    body = _sse([("token", {"t": "x", "i": -3})])
    with pytest.raises(APIResponseValidationError, match=r"data\.i"):
        _decode(body, _every(100))


def test_refused_stream_raises_with_the_documented_error_body() -> None:
    body = json.dumps({"code": "NOT_FOUND", "message": "no such task"}).encode()
    with pytest.raises(NotFoundError) as info:
        with _client(body, _every(100), status=404).tasks.stream("nope"):
            pass
    assert info.value.status_code == 404 and info.value.code == "NOT_FOUND"
    assert info.value.envelope is not None and info.value.envelope.message == "no such task"


async def test_async_stream_decodes_the_same_events() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for chunk in _every(3)(RECORDED):
            yield chunk

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=chunks(), headers={"content-type": "text/event-stream"})

    client = AsyncClient("http://orch", http_client=httpx.AsyncClient(transport=httpx.MockTransport(handler)))
    async with client.tasks.stream("t1") as stream:
        names = [type(e).__name__ async for e in stream]
    assert names[0] == "StartedEvent" and names[-1] == "EndEvent" and len(names) == 8


def _infer_client(body: bytes) -> Client:
    def handler(request: httpx.Request) -> httpx.Response:
        assert json.loads(request.content)["prompt"] == "Hi"
        return httpx.Response(200, content=_every(4)(body), headers={"content-type": "application/x-ndjson"})

    return Client("http://orch", http_client=httpx.Client(transport=httpx.MockTransport(handler)))


def test_ndjson_body_decodes_to_typed_lines() -> None:
    body = (
        '{"token":"Hé"}\n{"token":"llo"}\n'
        '{"done":true,"content":"Héllo","finish_reason":"length",'
        '"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}\n'
    ).encode()
    with _infer_client(body).infer(InferRequest(prompt="Hi")) as lines:
        items = list(lines)
    assert [type(i) for i in items] == [InferToken, InferToken, InferDone]
    done = items[-1]
    assert isinstance(done, InferDone) and done.content == "Héllo" and done.usage.total_tokens == 3


def test_ndjson_error_line_after_tokens_is_a_typed_error_item() -> None:
    body = b'{"token":"a"}\n{"error":"engine connection lost","code":500}\n'
    with _infer_client(body).infer({"prompt": "Hi"}) as lines:
        items = list(lines)
    assert isinstance(items[-1], InferError) and items[-1].code == 500
