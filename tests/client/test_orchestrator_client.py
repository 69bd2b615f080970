"""The generated orchestrator client (llama_orch_gen.orchestrator) over a scripted transport: typed raised errors for
any status and body, the one retry loop, timeouts, idempotent submits, raw responses, resumed streams."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pydantic
import pytest
from llama_orch_gen.orchestrator import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncClient,
    BadGatewayError,
    BadRequestError,
    Client,
    InternalServerError,
    NotFoundError,
    RateLimitError,
    ServiceUnavailableError,
    StreamError,
    errors,
)
from llama_orch_gen.orchestrator.models import (
    AdmissionResponse,
    EndEvent,
    ErrorEvent,
    StartedEvent,
    TaskRequest,
    TokenEvent,
)

from llama_orch_runtime import base_client
from llama_orch_runtime.base_client import MAX_RETRY_AFTER_S, retry_delay

ADMISSION = {"task_id": "t-1", "queue_position": 0, "predicted_start_ms": 0, "backoff_ms": 0}
STARTED = {
    "task_id": "t-1",
    "queue_position": 0,
    "predicted_start_ms": 0,
    "engine": "mock",
    "engine_version": "0",
    "pool_id": "default",
    "replica_id": "m0",
}
Handler = Callable[[httpx.Request], httpx.Response]


class Script:
    """Answers requests in order, one handler each (the last repeats), and keeps what was asked."""

    def __init__(self, *answers: httpx.Response | Exception | Handler) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer(request) if callable(answer) else answer

    def client(self, **options: Any) -> Client:
        return Client("http://orch", http_client=httpx.Client(transport=httpx.MockTransport(self)), **options)


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Retry waits are recorded, not slept."""
    waits: list[float] = []
    monkeypatch.setattr(base_client.time, "sleep", waits.append)
    return waits


def envelope(status: int, code: str, **extra: Any) -> httpx.Response:
    return httpx.Response(status, json={"code": code, "message": code.lower(), **extra}, headers=extra.pop("h", {}))


def sse(*frames: tuple[int, str, dict[str, Any]]) -> bytes:
    return b"".join(f"id: {n}\nevent: {e}\ndata: {json.dumps(d)}\n\n".encode() for n, e, d in frames)


# -- errors ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (404, NotFoundError),
        (429, RateLimitError),
        (500, InternalServerError),
        (502, BadGatewayError),
        (503, ServiceUnavailableError),
        (520, InternalServerError),
        (599, InternalServerError),
        (418, APIStatusError),
    ],
)
def test_every_status_raises_its_class_with_the_answer(status: int, cls: type[APIStatusError]) -> None:
    script = Script(httpx.Response(status, json={"code": "INTERNAL", "message": "boom", "retriable": False}))
    with pytest.raises(APIStatusError) as info:
        script.client().capabilities()
    error = info.value
    assert type(error) is cls and error.status_code == status and error.response.status_code == status
    assert error.code == "INTERNAL" and error.body == {"code": "INTERNAL", "message": "boom", "retriable": False}
    assert f"HTTP {status} INTERNAL: boom" in str(error)


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (b"<html>bad gateway</html>", "not a JSON object"),
        (b'{"message": "no code"}', "field 'code'"),
        (b'{"code": "NOPE", "message": "x"}', "field 'code'"),
        (b"[1, 2]", "not a JSON object"),
    ],
)
def test_a_malformed_error_body_keeps_the_body_and_names_what_is_wrong(body: bytes, named: str) -> None:
    with pytest.raises(InternalServerError) as info:
        Script(httpx.Response(599, content=body)).client(max_retries=0).capabilities()
    assert info.value.code is None and info.value.envelope is None and named in str(info.value)


def test_retry_after_comes_from_the_header_the_backoff_header_or_the_envelope() -> None:
    def after(response: httpx.Response) -> float | None:
        response.request = httpx.Request("GET", "http://orch/v1/tasks")
        return errors.status_error(response).retry_after

    assert after(httpx.Response(429, headers={"Retry-After": "3"})) == 3.0
    assert after(httpx.Response(429, headers={"X-Backoff-Ms": "250"})) == 0.25
    assert after(httpx.Response(503, json={"code": "POOL_UNREADY", "message": "m", "retry_after_ms": 1500})) == 1.5
    assert after(httpx.Response(503, headers={"Retry-After": "soon"})) is None


def test_a_successful_answer_that_does_not_match_its_schema_names_the_field() -> None:
    script = Script(httpx.Response(202, json={**ADMISSION, "queue_position": -1}))
    with pytest.raises(errors.APIResponseValidationError, match="queue_position"):
        script.client().tasks.create({"prompt": "hi"})


# -- retries -----------------------------------------------------------------------------------------------------


def test_two_503s_with_retry_after_zero_then_success_on_the_third_try(no_sleep: list[float]) -> None:
    busy = httpx.Response(503, json={"code": "POOL_UNREADY", "message": "loading"}, headers={"Retry-After": "0"})
    script = Script(busy, busy, httpx.Response(202, json=ADMISSION))
    admitted = script.client().tasks.create({"prompt": "hi"})
    assert isinstance(admitted, AdmissionResponse) and isinstance(admitted, pydantic.BaseModel)
    assert len(script.requests) == 3 and no_sleep == [0.0, 0.0]


def test_the_repeated_submit_names_the_same_task_so_the_server_admits_it_once() -> None:
    script = Script(envelope(503, "POOL_UNREADY"), httpx.Response(202, json=ADMISSION))
    script.client().tasks.create(TaskRequest(prompt="hi"))
    first, second = (json.loads(r.content) for r in script.requests)
    assert first == second and first["task_id"] and first["prompt"] == "hi"
    assert set(first) == {"prompt", "task_id"}  # a model sends the fields the caller set


def test_retries_stop_after_max_retries_and_raise_the_last_answer(no_sleep: list[float]) -> None:
    script = Script(envelope(429, "ADMISSION_REJECT"))
    with pytest.raises(RateLimitError) as info:
        script.client(max_retries=3).tasks.create({"prompt": "hi"})
    assert info.value.retriable and len(script.requests) == 4 and len(no_sleep) == 3


@pytest.mark.parametrize(
    ("answer", "tries"),
    [
        (envelope(400, "INVALID_PARAMS"), 1),  # the request itself is wrong
        (envelope(503, "POOL_UNREADY", retriable=False), 1),  # the server says not to
        (envelope(500, "WORKER_RESET", retriable=True), 3),  # the server says to
        (envelope(500, "INTERNAL"), 1),
        (httpx.Response(504), 3),
        (httpx.Response(408), 3),
    ],
)
def test_what_is_retried(answer: httpx.Response, tries: int) -> None:
    script = Script(answer)
    with pytest.raises(APIStatusError):
        script.client().capabilities()
    assert len(script.requests) == tries


def test_connection_errors_are_retried_then_raised_typed() -> None:
    script = Script(httpx.ConnectError("refused"))
    with pytest.raises(APIConnectionError) as info:
        script.client().capabilities()
    assert len(script.requests) == 3 and not isinstance(info.value, APITimeoutError)
    with pytest.raises(APITimeoutError):
        Script(httpx.ReadTimeout("slow")).client(max_retries=0).capabilities()


def test_backoff_grows_exponentially_with_jitter_and_the_server_wait_is_capped() -> None:
    assert [retry_delay(n, None, jitter=0) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0]
    assert retry_delay(1, None, jitter=1) == 0.75
    assert retry_delay(0, 3.0) == 3.0 and retry_delay(0, 3600.0) == MAX_RETRY_AFTER_S


# -- timeouts, auth, raw responses ---------------------------------------------------------------------------


def test_default_timeout_is_5s_connect_600s_read_and_a_call_may_override_it() -> None:
    script = Script(httpx.Response(202, json=ADMISSION))
    client = script.client(api_key="sekrit")
    assert client.timeout == httpx.Timeout(600.0, connect=5.0) and client.max_retries == 2
    client.tasks.create({"prompt": "hi"})
    client.tasks.create({"prompt": "hi"}, timeout=httpx.Timeout(1.0, connect=0.5))
    per_client = Script(httpx.Response(204))
    per_client.client(timeout=7.0).tasks.cancel("t-1")
    assert per_client.requests[0].extensions["timeout"] == httpx.Timeout(7.0).as_dict()
    default, per_call = (r.extensions["timeout"] for r in script.requests)
    assert default == {"connect": 5.0, "read": 600.0, "write": 600.0, "pool": 600.0}
    assert per_call == {"connect": 0.5, "read": 1.0, "write": 1.0, "pool": 1.0}
    assert script.requests[0].headers["authorization"] == "Bearer sekrit"


def test_with_raw_response_gives_status_headers_and_the_parsed_model() -> None:
    script = Script(httpx.Response(202, json=ADMISSION, headers={"X-Correlation-Id": "c-1"}))
    raw = script.client().with_raw_response.tasks.create({"prompt": "hi"})
    assert raw.status_code == 202 and raw.headers["x-correlation-id"] == "c-1"
    assert raw.parse().task_id == "t-1"


# -- streams -----------------------------------------------------------------------------------------------------


def _cut_after(body: bytes, events: int) -> Iterator[bytes]:
    """The body's first `events` frames, then a reset connection."""
    frames = body.split(b"\n\n")
    yield b"\n\n".join(frames[:events]) + b"\n\n"
    raise httpx.ReadError("connection reset")


FULL = sse(
    (0, "started", STARTED),
    (1, "token", {"t": "a", "i": 0}),
    (2, "token", {"t": "b", "i": 1}),
    (3, "end", {"tokens_out": 2, "decode_time_ms": 1.0}),
)


def test_stream_items_are_the_event_classes_themselves() -> None:
    with Script(httpx.Response(200, content=FULL)).client().tasks.stream("t-1") as events:
        items = list(events)
    assert [type(e) for e in items] == [StartedEvent, TokenEvent, TokenEvent, EndEvent]
    assert items[1].event == "token" and isinstance(items[1], TokenEvent) and items[1].data.t == "a"


def test_a_lost_stream_resumes_after_its_last_event_and_is_never_replayed() -> None:
    def resumed(request: httpx.Request) -> httpx.Response:
        assert request.headers["last-event-id"] == "1"
        return httpx.Response(200, content=FULL[FULL.index(b"id: 2") :])

    script = Script(lambda request: httpx.Response(200, content=_cut_after(FULL, 2)), resumed)
    with script.client().tasks.stream("t-1") as events:
        items = list(events)
    assert [e.event for e in items] == ["started", "token", "token", "end"]
    assert "last-event-id" not in script.requests[0].headers and len(script.requests) == 2


def test_last_event_id_given_by_the_caller_is_sent() -> None:
    script = Script(httpx.Response(200, content=FULL[FULL.index(b"id: 3") :]))
    with script.client().tasks.stream("t-1", last_event_id=2) as events:
        assert [e.event for e in events] == ["end"]
    assert script.requests[0].headers["last-event-id"] == "2"


def test_a_stream_that_keeps_failing_raises_a_connection_error_after_max_retries() -> None:
    script = Script(lambda request: httpx.Response(200, content=_cut_after(FULL, 1)))
    with pytest.raises(APIConnectionError), script.client(max_retries=1).tasks.stream("t-1") as events:
        list(events)
    assert len(script.requests) == 2


def test_infer_is_not_resumable_so_a_lost_stream_raises() -> None:
    lines = b'{"token": "a"}\n'

    def cut(request: httpx.Request) -> httpx.Response:
        def body() -> Iterator[bytes]:
            yield lines
            raise httpx.ReadError("reset")

        return httpx.Response(200, content=body())

    script = Script(cut)
    with pytest.raises(APIConnectionError), script.client().infer({"prompt": "hi"}) as stream:
        list(stream)
    assert len(script.requests) == 1


def test_an_error_event_is_an_item_or_on_request_a_stream_error() -> None:
    failed = sse((0, "started", STARTED), (1, "error", {"code": "WORKER_RESET", "message": "gone", "retriable": True}))
    with Script(httpx.Response(200, content=failed)).client().tasks.stream("t-1") as events:
        assert isinstance(list(events)[-1], ErrorEvent)
    stream = Script(httpx.Response(200, content=failed)).client().tasks.stream("t-1", raise_on_error=True)
    received: list[object] = []
    with pytest.raises(StreamError) as info, stream as events:
        received.extend(events)
    assert info.value.code == "WORKER_RESET" and info.value.retriable
    assert [type(e) for e in received] == [StartedEvent]  # what came before the error is not lost


def test_a_refused_stream_is_retried_before_its_first_event() -> None:
    script = Script(envelope(503, "POOL_UNREADY"), httpx.Response(200, content=FULL))
    with script.client().tasks.stream("t-1") as events:
        assert len(list(events)) == 4


# -- async -------------------------------------------------------------------------------------------------------


async def test_async_client_retries_raises_and_streams_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_wait(seconds: float) -> None:
        return None

    monkeypatch.setattr(base_client.asyncio, "sleep", no_wait)
    script = Script(envelope(503, "POOL_UNREADY"), httpx.Response(202, json=ADMISSION))
    transport = httpx.MockTransport(script)
    async with AsyncClient("http://orch", http_client=httpx.AsyncClient(transport=transport)) as client:
        assert (await client.tasks.create({"prompt": "hi"})).task_id == "t-1"
        script.answers = [envelope(404, "NOT_FOUND")]
        with pytest.raises(NotFoundError):
            await client.sessions.get("nope")
        script.answers = [httpx.Response(200, content=FULL)]
        async with client.tasks.stream("t-1") as events:
            assert [type(e) async for e in events][-1] is EndEvent


async def test_async_stream_resumes_after_its_last_event_too() -> None:
    def resumed(request: httpx.Request) -> httpx.Response:
        assert request.headers["last-event-id"] == "1"
        return httpx.Response(200, content=FULL[FULL.index(b"id: 2") :])

    async def cut(request: httpx.Request) -> httpx.Response:
        async def body() -> AsyncIterator[bytes]:
            for chunk in _cut_after(FULL, 2):
                yield chunk

        return httpx.Response(200, content=body())

    answers: list[Any] = [cut, resumed]
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers[len(seen) - 1](request)
        return await answer if hasattr(answer, "__await__") else answer

    transport = httpx.MockTransport(handler)
    async with AsyncClient("http://orch", http_client=httpx.AsyncClient(transport=transport)) as client:
        async with client.tasks.stream("t-1") as events:
            assert [e.event async for e in events] == ["started", "token", "token", "end"]
    assert len(seen) == 2


def test_a_request_cut_after_it_was_sent_is_resent_only_where_a_repeat_is_harmless() -> None:
    cut = Script(httpx.ReadError("reset after the request went out"))
    with pytest.raises(APIConnectionError), cut.client().infer({"prompt": "hi"}):
        pass
    assert len(cut.requests) == 1  # /infer has no idempotency key: the engine may be generating already
    refused = Script(httpx.ConnectError("refused"))
    with pytest.raises(APIConnectionError), refused.client().infer({"prompt": "hi"}):
        pass
    assert len(refused.requests) == 3  # never reached the server
    submit = Script(httpx.ReadError("reset"), httpx.Response(202, json=ADMISSION))
    submit.client().tasks.create({"prompt": "hi"})
    keys = [r.headers["idempotency-key"] for r in submit.requests]
    assert len(keys) == 2 and keys[0] == keys[1] == json.loads(submit.requests[0].content)["task_id"]


def test_the_package_exports_what_its_all_lists_and_every_error_class() -> None:
    import llama_orch_gen.orchestrator as package

    assert all(hasattr(package, name) for name in package.__all__)
    classes = {name for name, value in vars(errors).items() if isinstance(value, type) and issubclass(value, Exception)}
    assert classes <= set(package.__all__)
    assert set(errors.STATUS_ERRORS.values()) <= {getattr(errors, name) for name in classes}
