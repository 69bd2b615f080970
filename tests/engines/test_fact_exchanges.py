"""Wire exchanges written from FACTS.md for the engines that cannot run here (vLLM, TGI, Triton),
plus llama.cpp framings the recordings do not show. They are checked with the same machinery as the
real recordings, and the broken ones prove that the checks (and the `x-stream` declarations) bite.

Every body below is synthetic: built from the framing and payload facts in FACTS.md, not recorded."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from .spec_support import ENGINES, check_exchange, component_pointer, load_spec, schema_errors

SSE = "text/event-stream"
JSON_UTF8 = "application/json; charset=utf-8"


def sse(*payloads: object, prefix: str = "data: ", tail: str = "") -> bytes:
    """An SSE body: each payload (JSON-encoded unless it is a str) as one `data` event."""
    events = [f"{prefix}{p if isinstance(p, str) else json.dumps(p)}\n\n" for p in payloads]
    return ("".join(events) + tail).encode()


@dataclass(frozen=True)
class Exchange:
    name: str
    engine: str
    method: str
    path: str
    status: int
    content_type: str
    body: bytes
    valid: bool = True


def _vllm_chunk(text: str, finish: str | None = None) -> dict[str, object]:
    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish, "stop_reason": None}
    return {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m", "choices": [choice]}


VLLM_USAGE = {
    "id": "cmpl-1",
    "object": "text_completion",
    "created": 1,
    "model": "m",
    "choices": [],
    "usage": {"prompt_tokens": 3, "total_tokens": 5, "completion_tokens": 2},
}
VLLM_ERROR = {"error": {"message": "engine dead", "type": "InternalServerError", "param": None, "code": 500}}
VLLM_CHAT = [
    {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    for delta, finish in (({"role": "assistant", "content": ""}, None), ({"content": "Hi"}, None), ({}, "stop"))
]


def _tgi_token(index: int, text: str, final: str | None = None) -> dict[str, object]:
    details = {"finish_reason": "length", "generated_tokens": index, "seed": None, "input_length": 4}
    return {
        "index": index,
        "token": {"id": 100 + index, "text": text, "logprob": -0.5, "special": False},
        "generated_text": final,
        "details": details if final is not None else None,
    }


TGI_CHAT = {
    "id": "",
    "object": "chat.completion.chunk",
    "created": 1,
    "model": "tgi",
    "system_fingerprint": "3.3.6-dev0-native",
    "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}, "logprobs": None, "finish_reason": None}],
    "usage": None,
}
TGI_USAGE = {**TGI_CHAT, "choices": [], "usage": {"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5}}
LLAMACPP_PARTIAL = {
    "index": 0,
    "content": "a",
    "tokens": [1],
    "stop": False,
    "id_slot": -1,
    "tokens_predicted": 1,
    "tokens_evaluated": 1,
}
LLAMACPP_FINAL = {**LLAMACPP_PARTIAL, "content": "", "tokens": [], "stop": True, "stop_type": "limit"}
TRITON_ITEM = {"model_name": "ensemble", "model_version": "1", "text_output": " Hi", "batch_index": 0}

EXCHANGES = [
    # vLLM (FACTS §2): `data: ` framing, usage chunk only on request, always `[DONE]`, even after an error.
    Exchange("vllm-usage", "vllm", "POST", "/v1/completions", 200, SSE,
             sse(_vllm_chunk(" Hi"), _vllm_chunk("!", "length"), VLLM_USAGE, "[DONE]")),
    Exchange("vllm-keepalive", "vllm", "POST", "/v1/completions", 200, SSE,
             b": keep-alive\n\n" + sse(_vllm_chunk(" Hi", "stop"), "[DONE]")),
    Exchange("vllm-error-then-done", "vllm", "POST", "/v1/completions", 200, SSE,
             sse(_vllm_chunk(" Hi"), VLLM_ERROR, "[DONE]")),
    Exchange("vllm-no-done", "vllm", "POST", "/v1/completions", 200, SSE, sse(_vllm_chunk(" Hi")), valid=False),
    Exchange("vllm-chat", "vllm", "POST", "/v1/chat/completions", 200, SSE, sse(*VLLM_CHAT, "[DONE]")),
    Exchange("vllm-401", "vllm", "POST", "/v1/completions", 401, "application/json", b'{"error":"Unauthorized"}'),
    Exchange("vllm-400-legacy", "vllm", "POST", "/v1/completions", 400, "application/json",
             json.dumps({"object": "error", "message": "bad", "type": "BadRequestError", "param": None,
                         "code": 400}).encode()),
    Exchange("vllm-404", "vllm", "POST", "/v1/chat/completions", 404, "application/json",
             json.dumps({"error": {"message": "The model `x` does not exist.", "type": "NotFoundError",
                                   "param": None, "code": 404}}).encode()),
    Exchange("vllm-health", "vllm", "GET", "/health", 200, "", b""),
    Exchange("vllm-health-dead", "vllm", "GET", "/health", 503, "", b""),
    Exchange("vllm-version", "vllm", "GET", "/version", 200, "application/json", b'{"version":"0.33.0"}'),
    Exchange("vllm-metrics", "vllm", "GET", "/metrics", 200, "text/plain; version=0.0.4", b"vllm:num_requests 0\n"),
    # TGI (FACTS §3): `data:` without a space; no `[DONE]` on /generate_stream; in-stream errors under 200.
    Exchange("tgi-generate-stream", "tgi", "POST", "/generate_stream", 200, SSE,
             b":\n\n" + sse(_tgi_token(1, " a"), _tgi_token(2, " b", final=" a b"), prefix="data:")),
    Exchange("tgi-generate-stream-error", "tgi", "POST", "/generate_stream", 200, SSE,
             sse({"error": "Model is overloaded", "error_type": "overloaded"}, prefix="data:")),
    Exchange("tgi-generate-stream-truncated", "tgi", "POST", "/generate_stream", 200, SSE,
             sse(_tgi_token(1, " a"), prefix="data:"), valid=False),
    Exchange("tgi-chat-usage", "tgi", "POST", "/v1/chat/completions", 200, SSE,
             sse(TGI_CHAT, TGI_USAGE, "[DONE]", prefix="data:")),
    Exchange("tgi-chat-error", "tgi", "POST", "/v1/chat/completions", 200, SSE,
             sse(TGI_CHAT, {"error": {"message": "Input validation error", "http_status_code": 422}}, prefix="data:")),
    Exchange("tgi-401-empty", "tgi", "POST", "/generate", 401, "", b""),
    Exchange("tgi-422-extractor", "tgi", "POST", "/generate", 422, "text/plain; charset=utf-8",
             b"Failed to deserialize the JSON body into the target type: missing field `inputs`"),
    Exchange("tgi-429", "tgi", "POST", "/generate", 429, "application/json",
             b'{"error":"Model is overloaded","error_type":"overloaded"}'),
    Exchange("tgi-health-503", "tgi", "GET", "/health", 503, "application/json",
             b'{"error":"unhealthy","error_type":"healthcheck"}'),
    Exchange("tgi-health", "tgi", "GET", "/health", 200, "", b""),
    # Triton (FACTS §4): `data: ` framing, no `[DONE]`, EOF ends the stream; `{"error": str}`.
    Exchange("triton-stream", "triton", "POST", "/v2/models/ensemble/generate_stream", 200,
             "text/event-stream; charset=utf-8", sse(TRITON_ITEM, {**TRITON_ITEM, "text_output": "!"})),
    Exchange("triton-stream-error", "triton", "POST", "/v2/models/ensemble/generate_stream", 200, SSE,
             sse(TRITON_ITEM, {"error": "in-flight batching failed"})),
    Exchange("triton-stream-bad-item", "triton", "POST", "/v2/models/ensemble/generate_stream", 200, SSE,
             sse({"model_name": ["ensemble"], "text_output": " Hi"}), valid=False),  # a member of the wrong type
    Exchange("triton-generate", "triton", "POST", "/v2/models/ensemble/generate", 200, "application/json",
             json.dumps({**TRITON_ITEM, "cum_log_probs": 0.0, "output_log_probs": [0.0, -1.5]}).encode()),
    Exchange("triton-not-ready", "triton", "GET", "/v2/health/ready", 400, "", b""),
    Exchange("triton-model-not-ready", "triton", "GET", "/v2/models/ensemble/ready", 400, "application/json",
             b'{"error":"Model version not ready"}'),
    Exchange("triton-metadata", "triton", "GET", "/v2", 200, "application/json",
             b'{"name":"triton","version":"2.73.0dev","extensions":["classification","sequence"]}'),
    # llama.cpp (FACTS §1.5): framings the recordings do not show.
    Exchange("llamacpp-oai-error-no-done", "llamacpp", "POST", "/v1/chat/completions", 200, SSE,
             sse({"error": {"code": 500, "message": "boom", "type": "server_error"}})),
    Exchange("llamacpp-native-keepalive", "llamacpp", "POST", "/completion", 200, SSE,
             b":\n\n" + sse(LLAMACPP_PARTIAL, LLAMACPP_FINAL)),
    Exchange("llamacpp-two-completions", "llamacpp", "POST", "/completion", 200, SSE,
             sse(LLAMACPP_PARTIAL, {**LLAMACPP_PARTIAL, "index": 1}, {**LLAMACPP_FINAL, "index": 1}, LLAMACPP_FINAL)),
    Exchange("llamacpp-native-truncated", "llamacpp", "POST", "/completion", 200, SSE, sse(LLAMACPP_PARTIAL),
             valid=False),
    Exchange("llamacpp-metrics-501", "llamacpp", "GET", "/metrics", 501, JSON_UTF8,
             json.dumps({"error": {"code": 501, "type": "not_supported_error",
                                   "message": "This server does not support metrics endpoint."}}).encode()),
]  # fmt: skip


@pytest.mark.parametrize("exchange", EXCHANGES, ids=[e.name for e in EXCHANGES])
def test_fact_exchange(exchange: Exchange) -> None:
    problems = check_exchange(
        exchange.engine, exchange.method, exchange.path, exchange.status, exchange.content_type, exchange.body
    )
    if exchange.valid:
        assert problems == []
    else:
        assert problems, "a broken exchange must be reported"


@pytest.mark.parametrize("engine", ENGINES)
def test_component_examples_validate(engine: str) -> None:
    """`examples` on component schemas (written from FACTS.md payloads) validate against their schema."""
    problems: list[str] = []
    for name, schema in load_spec(engine)["components"]["schemas"].items():
        for index, example in enumerate(schema.get("examples", [])):
            problems += [
                f"{name} examples[{index}]: {p}" for p in schema_errors(engine, component_pointer(name), example)
            ]
    assert problems == []
