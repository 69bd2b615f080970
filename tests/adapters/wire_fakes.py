"""Each engine's wire format, byte for byte as FACTS.md describes it, served through `httpx.MockTransport` with
injectable faults. The simulators in `llama_orch.simulators` do the same over real sockets; these fakes keep the
fault matrix fast, deterministic and independent of them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from llama_orch.adapters.http_adapter import HttpAdapter
from llama_orch.adapters.http_policy import HttpPolicy
from llama_orch.adapters.llamacpp import LlamaCppAdapter
from llama_orch.adapters.tgi import TgiAdapter
from llama_orch.adapters.triton import TritonAdapter
from llama_orch.adapters.vllm import VllmAdapter
from tests.adapters.replay import TRANSCRIPTS

TOKENS = ["Hel", "lo", ", ", "wör", "ld", " 🙂"]


def sse(payload: Any, prefix: str = "data: ") -> bytes:
    return f"{prefix}{payload if isinstance(payload, str) else json.dumps(payload)}\n\n".encode()


@dataclass(frozen=True)
class Dialect:
    engine: str
    stream_path: str
    token: Callable[[int, str], bytes]
    final: Callable[[int], bytes]  # the terminal chunk(s) after n tokens; b"" when the engine has none
    in_stream_error: bytes
    error_body: Callable[[int], dict[str, Any]]  # status → the engine's error JSON
    control_routes: Callable[[], dict[str, tuple[int, bytes]]]  # built when a test asks (recordings are read then)
    make: Callable[..., HttpAdapter]

    @property
    def control(self) -> dict[str, tuple[int, bytes]]:
        return self.control_routes()


def recording(name: str) -> bytes:
    """A llama-server recording, read at test time: a missing reference copy fails the test that needs it."""
    path = TRANSCRIPTS / name
    if not path.is_file():
        raise AssertionError(f"missing recording {path}: set LLAMA_ORCH_SHARED to the shared reference directory")
    return path.read_bytes()


def _llama_error(status: int) -> dict[str, Any]:
    kind = {400: "invalid_request_error", 401: "authentication_error", 503: "unavailable_error"}.get(
        status, "server_error"
    )
    return {"error": {"code": status, "message": "Loading model" if status == 503 else "failed", "type": kind}}


LLAMACPP = Dialect(
    engine="llamacpp",
    stream_path="/completion",
    token=lambda i, t: sse(
        {
            "index": 0,
            "content": t,
            "tokens": [i],
            "stop": False,
            "id_slot": -1,
            "tokens_predicted": i + 1,
            "tokens_evaluated": 3,
        }
    ),
    final=lambda n: sse(
        {
            "index": 0,
            "content": "",
            "tokens": [],
            "stop": True,
            "id_slot": 0,
            "tokens_predicted": n,
            "tokens_evaluated": 3,
            "stop_type": "eos",
            "stopping_word": "",
            "model": "tiny",
        }
    ),
    in_stream_error=sse({"error": {"code": 500, "message": "decode failed", "type": "server_error"}}),
    error_body=_llama_error,
    control_routes=lambda: {"/props": (200, recording("props.body")), "/health": (200, b'{"status":"ok"}')},
    make=lambda **kw: LlamaCppAdapter("p", "r0", api="native", **kw),
)


def _vllm_chunk(choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m", "choices": choices, **extra}


VLLM = Dialect(
    engine="vllm",
    stream_path="/v1/completions",
    token=lambda i, t: sse(_vllm_chunk([{"index": 0, "text": t}])),
    final=lambda n: (
        sse(_vllm_chunk([{"index": 0, "text": "", "finish_reason": "stop"}]))
        + sse(_vllm_chunk([], usage={"prompt_tokens": 3, "completion_tokens": n, "total_tokens": n + 3}))
        + sse("[DONE]")
    ),
    in_stream_error=sse(
        {"error": {"message": "engine dead", "type": "InternalServerError", "param": None, "code": 500}}
    )
    + sse("[DONE]"),
    error_body=lambda s: (
        {"error": "Unauthorized"}
        if s == 401
        else {"error": {"message": "failed", "type": "X", "param": None, "code": s}}
    ),
    control_routes=lambda: {"/version": (200, b'{"version":"0.33.0"}'), "/health": (200, b"")},
    make=lambda **kw: VllmAdapter("p", "r0", model="m", **kw),
)


def _tgi_event(i: int, t: str, final: dict[str, Any] | None = None) -> bytes:
    event: dict[str, Any] = {
        "index": i + 1,
        "token": {"id": i, "text": t, "logprob": -0.5, "special": False},
        "generated_text": None,
        "details": None,
    }
    if final is not None:
        event.update(final)
    return sse(event, prefix="data:")


TGI_INFO = {
    "model_id": "m",
    "model_sha": "abc123",
    "max_concurrent_requests": 128,
    "max_best_of": 2,
    "max_stop_sequences": 4,
    "max_input_tokens": 1024,
    "max_total_tokens": 2048,
    "validation_workers": 2,
    "max_client_batch_size": 4,
    "router": "text-generation-router",
    "version": "3.3.6",
    "sha": "db931fcf42da",
}

_TGI_TYPES = {
    400: "validation",
    422: "validation",
    424: "generation",
    429: "overloaded",
    500: "incomplete_generation",
    503: "healthcheck",
}

TGI = Dialect(
    engine="tgi",
    stream_path="/generate_stream",
    token=_tgi_event,
    final=lambda n: _tgi_event(
        n,
        "</s>",
        {
            "token": {"id": 2, "text": "</s>", "logprob": -0.1, "special": True},
            "generated_text": "".join(TOKENS[:n]),
            "details": {"finish_reason": "eos_token", "generated_tokens": n + 1, "input_length": 3, "seed": 1},
        },
    ),
    in_stream_error=sse({"error": "Request failed during generation", "error_type": "generation"}, prefix="data:"),
    error_body=lambda s: {
        "error": "Model is overloaded" if s == 429 else "failed",
        "error_type": {429: "overloaded", 422: "validation", 400: "validation"}.get(s, "generation"),
    },
    control_routes=lambda: {"/info": (200, json.dumps(TGI_INFO).encode()), "/health": (200, b"")},
    make=lambda **kw: TgiAdapter("p", "r0", **kw),
)

TRITON = Dialect(
    engine="triton",
    stream_path="/v2/models/ensemble/generate_stream",
    token=lambda i, t: sse({"model_name": "ensemble", "model_version": "1", "text_output": t}),
    final=lambda n: b"",
    in_stream_error=sse({"error": "in-flight batcher failed"}),
    error_body=lambda s: {"error": "failed"},
    control_routes=lambda: {
        "/v2": (200, b'{"name":"triton","version":"2.73.0","extensions":[]}'),
        "/v2/models/ensemble": (200, b'{"name":"ensemble","versions":["1"],"platform":"ensemble"}'),
    },
    make=lambda **kw: TritonAdapter("p", "r0", model="ensemble", **kw),
)

DIALECTS = [LLAMACPP, VLLM, TGI, TRITON]


@dataclass
class Fake:
    """One fake engine: `script` holds the response of each successive stream call (the last one repeats)."""

    dialect: Dialect
    script: list[Callable[[], httpx.Response]]
    calls: int = 0
    closed: list[bool] = field(default_factory=list)  # one entry per streamed body: was it closed?

    def transport(self) -> httpx.MockTransport:
        control = self.dialect.control  # read now, in the test: a missing recording fails it by name

        async def handle(request: httpx.Request) -> httpx.Response:
            if request.url.path == self.dialect.stream_path:
                step = self.script[min(self.calls, len(self.script) - 1)]
                self.calls += 1
                return step()
            status, body = control.get(request.url.path, (404, b'{"error":"not found"}'))
            return httpx.Response(status, content=body, headers={"content-type": "application/json"})

        return httpx.MockTransport(handle)

    def adapter(self, policy: HttpPolicy) -> HttpAdapter:
        return self.dialect.make(base_url="http://engine", policy=policy, transport=self.transport())

    # -- responses ---------------------------------------------------------------------------------------------

    def stream(self, parts: list[bytes | BaseException | float]) -> Callable[[], httpx.Response]:
        """A 200 event stream of `parts`: bytes are sent, an exception is raised, a float is a pause (s)."""

        def respond() -> httpx.Response:
            index = len(self.closed)
            self.closed.append(False)
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=_Body(parts, self, index))

        return respond

    def ok(self, n: int = len(TOKENS)) -> Callable[[], httpx.Response]:
        return self.stream([self.dialect.token(i, t) for i, t in enumerate(TOKENS[:n])] + [self.dialect.final(n)])

    def status(self, status: int, headers: dict[str, str] | None = None) -> Callable[[], httpx.Response]:
        if status == 401 and self.dialect.engine == "tgi":  # TGI's auth failure has an empty body
            return lambda: httpx.Response(401, headers=headers or {})
        return lambda: httpx.Response(status, json=self.dialect.error_body(status), headers=headers or {})

    def tokens(self, n: int) -> list[bytes | BaseException | float]:
        return [self.dialect.token(i, t) for i, t in enumerate(TOKENS[:n])]


class _Body(httpx.AsyncByteStream):
    def __init__(self, parts: list[bytes | BaseException | float], fake: Fake, index: int) -> None:
        self._parts, self._fake, self._index = parts, fake, index

    async def __aiter__(self) -> Any:
        for part in self._parts:
            if isinstance(part, BaseException):
                raise part
            if isinstance(part, float):
                await asyncio.sleep(part)
                continue
            yield part

    async def aclose(self) -> None:
        self._fake.closed[self._index] = True


def refused(request_path: str = "") -> Callable[[], httpx.Response]:
    def respond() -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused")

    return respond
