"""Hugging Face TGI's router: `/generate_stream` as `data:{...}` (no space, no end marker), the last event with
`generated_text` (and `details` when asked); every failure after the body is parsed (overload, generation)
arrives inside the stream under 200 as `{"error","error_type"}`, as TGI does; /health 503 while unhealthy.
`POST /` is TGI's compat route (one-element list, or the stream when the body says `stream`); the Messages API
(`/v1/chat/completions`, `/v1/completions`) answers in TGI's OpenAI format (`id` "", `system_fingerprint`
"<version>-native", a usage chunk with `choices: []` on `stream_options.include_usage`, then `[DONE]`)."""

from __future__ import annotations

import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from llama_orch.simulators.core import (
    REFUSALS,
    EngineState,
    Fault,
    FaultKind,
    Generation,
    Shape,
    SimulatorConfig,
    SimulatorStream,
    as_prompt,
    generate,
    one_shot,
    piece_id,
    prompt_pieces,
    read_object,
    sse,
    stop_at,
)

__all__ = ["create_app"]

VERSION = "3.3.6"
FINGERPRINT = f"{VERSION}-native"  # "<version>-<docker_label or native>"
PREFIX = b"data:"
# With the space: huggingface_hub (up to 0.36) ends a stream only on the exact line `data: [DONE]`; any SSE reader
# takes both spellings as the same data.
DONE = sse(b"data: ", "[DONE]")
EOS = (2, "</s>")
_ERROR_TYPES = {
    FaultKind.OVERLOADED: "overloaded",
    FaultKind.LOADING: "generation",
    FaultKind.SERVER_ERROR: "generation",
}
_MESSAGES = {
    "overloaded": "Model is overloaded",
    "generation": "Request failed during generation: simulated shard failure",
}


def _error(error_type: str) -> dict[str, str]:
    return {"error": _MESSAGES[error_type], "error_type": error_type}


def _refused(fault: Fault | None) -> Response | None:
    """The status answer of a refusing fault on a non-streamed route (429 overloaded, else 424 generation)."""
    if fault is None or fault.kind not in REFUSALS:
        return None
    kind = _ERROR_TYPES[fault.kind]
    status = 429 if kind == "overloaded" else 424
    headers = {"Retry-After": str(fault.retry_after_s)} if status == 429 else None
    return JSONResponse(_error(kind), status, headers=headers)


def _invalid(parameters: dict[str, Any]) -> dict[str, str] | None:
    """The validation error TGI's router gives these parameters (a subset of its checks), or None."""
    temperature, limit = parameters.get("temperature"), parameters.get("max_new_tokens")
    if isinstance(temperature, int | float) and temperature <= 0:
        message = "`temperature` must be strictly positive"
    elif isinstance(limit, int) and limit <= 0:
        message = "`max_new_tokens` must be strictly positive"
    else:
        return None
    return {"error": f"Input validation error: {message}", "error_type": "validation"}


def _generated_text(body: dict[str, Any], generation: Generation) -> str:
    """The result's text: with the prompt before it when `parameters.return_full_text`."""
    full = (body.get("parameters") or {}).get("return_full_text") is True
    return body["inputs"] + generation.text if full else generation.text


def _finish(generation: Generation) -> str:
    """TGI's finish reason (the Messages API says "stop" for both eos_token and stop_sequence)."""
    return "stop_sequence" if generation.stopped else "length" if generation.limited else "eos_token"


def _usage(generation: Generation, generated: int) -> dict[str, int]:
    p = generation.prompt_tokens
    return {"prompt_tokens": p, "completion_tokens": generated, "total_tokens": p + generated}


class _Stream:
    def __init__(self, body: dict[str, Any], generation: Generation, refused: dict[str, str] | None) -> None:
        parameters = body.get("parameters") or {}
        self.generation, self.seed, self.details = generation, parameters.get("seed"), parameters.get("details") is True
        self.text = _generated_text(body, generation)
        self.refused = refused  # a refusal answered in the stream instead of tokens

    def _event(self, index: int, token: tuple[int, str], special: bool = False, **final: Any) -> dict[str, Any]:
        event = {
            "index": index,
            "token": {"id": token[0], "text": token[1], "logprob": -0.5, "special": special},
            "generated_text": None,
            "details": None,
        }
        return {**event, **final}

    def token(self, i: int) -> bytes:
        g = self.generation
        if g.cut and i == len(g.tokens) - 1:  # the last allowed token carries the result
            return sse(PREFIX, self._event(i + 1, (g.ids[i], g.tokens[i]), **self._result(_finish(g), i + 1)))
        return sse(PREFIX, self._event(i + 1, (g.ids[i], g.tokens[i])))

    def _result(self, finish: str, generated: int) -> dict[str, Any]:
        details = {
            "finish_reason": finish,
            "generated_tokens": generated,
            "seed": self.seed,
            "input_length": self.generation.prompt_tokens,
        }
        return {"generated_text": self.text, "details": details if self.details else None}

    def final(self) -> bytes:
        g = self.generation
        if g.cut and g.tokens:
            return b""  # the last token event already carried the result
        n = len(g.tokens)
        return sse(PREFIX, self._event(n + 1, EOS, special=True, **self._result("eos_token", n + 1)))

    def error(self) -> bytes:
        return sse(PREFIX, self.refused or _error("generation"))


class _Messages:
    """One Messages API answer (chat or text completion): chunks per token, the closing chunk with the finish
    reason (the EOS token, whose text is not shown), the usage chunk when asked, `[DONE]`."""

    def __init__(self, model: str, generation: Generation, include_usage: bool, chat: bool) -> None:
        self.generation, self.include_usage, self.chat = generation, include_usage, chat
        self.model, self.created = model, int(time.time())
        self.finish = "length" if generation.limited else "stop"
        self.refused: str | None = None  # the error_type of a refusal answered in the stream instead of tokens

    def _chunk(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> bytes:
        if self.chat:
            head = {"id": "", "object": "chat.completion.chunk", "created": self.created, "model": self.model}
            return sse(PREFIX, {**head, "system_fingerprint": FINGERPRINT, "choices": choices, "usage": usage})
        head = {"object": "text_completion", "id": "", "created": self.created, "choices": choices}
        return sse(PREFIX, {**head, "model": self.model, "system_fingerprint": FINGERPRINT})

    def _choice(self, text: str, finish: str | None) -> dict[str, Any]:
        if self.chat:
            delta = {"role": "assistant", "content": text, "tool_calls": None}
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish or ""}

    def token(self, i: int) -> bytes:
        g = self.generation
        last = g.cut and i == len(g.tokens) - 1  # the last allowed token carries the finish
        chunk = self._chunk([self._choice(g.tokens[i], self.finish if last else None)])
        return chunk + self._closing() if last else chunk

    def final(self) -> bytes:
        g = self.generation
        if g.cut and g.tokens:
            return b""  # the last token chunk closed the stream
        return self._chunk([self._choice("", self.finish)]) + self._closing()

    def _closing(self) -> bytes:
        n = len(self.generation.tokens)
        usage = self._chunk([], _usage(self.generation, n)) if self.include_usage and self.chat else b""
        return usage + DONE

    def error(self) -> bytes:
        kind = self.refused or "generation"
        detail = {"message": _MESSAGES[kind], "http_status_code": 429 if kind == "overloaded" else 424}
        return sse(PREFIX, {"error": detail})

    def result(self) -> dict[str, Any]:
        g = self.generation
        head = {"id": "", "created": self.created, "model": self.model, "system_fingerprint": FINGERPRINT}
        usage = _usage(g, len(g.tokens))
        if self.chat:
            message = {"role": "assistant", "content": g.text, "tool_calls": None}
            choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": self.finish}
            return {"object": "chat.completion", **head, "choices": [choice], "usage": usage}
        choice = {"index": 0, "text": g.text, "logprobs": None, "finish_reason": self.finish}
        return {"object": "text_completion", **head, "choices": [choice], "usage": usage}


class Simulator:
    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.model = config.model or "sim/model"
        self.state = EngineState(config)

    async def _request(self, request: Request) -> tuple[dict[str, Any], Generation] | Response:
        body = await read_object(request)
        if body is None or not isinstance(body.get("inputs"), str):
            return PlainTextResponse("Failed to deserialize the JSON body into the target type", 422)
        parameters = body.get("parameters") or {}
        limit = parameters.get("max_new_tokens")
        seed = parameters.get("seed")
        generation = generate(self.config, body["inputs"], seed, limit if isinstance(limit, int) else None)
        return body, stop_at(generation, parameters.get("stop"))

    async def generate_stream(self, request: Request) -> Response:
        parsed = await self._request(request)
        if isinstance(parsed, Response):
            return parsed
        return self._stream(*parsed)

    def _stream(self, body: dict[str, Any], generation: Generation) -> Response:
        parameters = body.get("parameters") or {}
        refused = _invalid(parameters)
        fault = None if refused else self.state.faults.take()
        if fault is not None and fault.kind in REFUSALS:
            refused = _error(_ERROR_TYPES[fault.kind])
        if refused is not None:  # answered in the stream, before any token
            fault = Fault(FaultKind.IN_STREAM_ERROR, after_tokens=0)
        return self._streamed(_Stream(body, generation, refused), generation, fault)

    def _streamed(self, shape: Shape, generation: Generation, fault: Fault | None) -> Response:
        return SimulatorStream(
            shape,
            generation,
            self.config,
            fault,
            prefix=PREFIX,
            headers={"x-compute-type": "gpu+optimized", "X-Accel-Buffering": "no"},
            on_close=self.state.begin(generation),
        )

    async def generate(self, request: Request) -> Response:
        parsed = await self._request(request)
        if isinstance(parsed, Response):
            return parsed
        return self._answer(*parsed, as_list=False)

    async def compat_generate(self, request: Request) -> Response:
        """`POST /`: `/generate_stream` when the body says `stream`, else `/generate` as a one-element list."""
        parsed = await self._request(request)
        if isinstance(parsed, Response):
            return parsed
        body, generation = parsed
        if body.get("stream") is True:
            return self._stream(body, generation)
        return self._answer(body, generation, as_list=True)

    def _answer(self, body: dict[str, Any], generation: Generation, as_list: bool) -> Response:
        parameters = body.get("parameters") or {}
        invalid = _invalid(parameters)
        if invalid is not None:
            return JSONResponse(invalid, 422)
        fault = self.state.faults.take()
        refused = _refused(fault)
        if refused is not None:
            return refused
        self.state.begin(generation)()
        result: dict[str, Any] = {"generated_text": _generated_text(body, generation)}
        if parameters.get("details") is True:
            tokens = [
                {"id": i, "text": t, "logprob": -0.5, "special": False}
                for i, t in zip(generation.ids, generation.tokens, strict=True)
            ]
            prefill = [
                {"id": piece_id(piece), "text": piece, "logprob": -0.5 if i else None}
                for i, piece in enumerate(prompt_pieces(body["inputs"]))
            ]
            result["details"] = {
                "finish_reason": _finish(generation),
                "generated_tokens": len(tokens),
                "seed": parameters.get("seed"),
                "prefill": prefill if parameters.get("decoder_input_details") is True else [],
                "tokens": tokens,
            }
        headers = {
            "x-compute-type": "gpu+optimized",
            "x-prompt-tokens": str(generation.prompt_tokens),
            "x-generated-tokens": str(len(generation.tokens)),
        }
        return one_shot(JSONResponse([result] if as_list else result, headers=headers), self.config, fault)

    async def _messages(self, request: Request, chat: bool) -> Response:
        body = await read_object(request)
        if body is None:
            return PlainTextResponse("Failed to parse the request body as JSON", 400)
        if chat:
            messages = body.get("messages")
            if not isinstance(messages, list):
                return PlainTextResponse("Failed to deserialize the JSON body into the target type: messages", 422)
            prompt = as_prompt(messages)
        else:
            prompt = as_prompt(body.get("prompt", ""))
        limit, seed = body.get("max_tokens"), body.get("seed")
        generation = generate(
            self.config, prompt, seed if isinstance(seed, int) else None, limit if isinstance(limit, int) else None
        )
        stop = body.get("stop")
        generation = stop_at(generation, [stop] if isinstance(stop, str) else stop)
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        shape = _Messages(self.model, generation, include_usage, chat)
        fault = self.state.faults.take()
        if body.get("stream") is not True:
            refused = _refused(fault)
            if refused is not None:
                return refused
            self.state.begin(generation)()
            return one_shot(JSONResponse(shape.result()), self.config, fault)
        if fault is not None and fault.kind in REFUSALS:  # answered in the stream, before any token
            shape.refused = _ERROR_TYPES[fault.kind]
            fault = Fault(FaultKind.IN_STREAM_ERROR, after_tokens=0)
        return self._streamed(shape, generation, fault)

    async def chat_completions(self, request: Request) -> Response:
        return await self._messages(request, chat=True)

    async def completions(self, request: Request) -> Response:
        return await self._messages(request, chat=False)

    async def tokenize(self, request: Request) -> Response:
        parsed = await self._request(request)
        if isinstance(parsed, Response):
            return parsed
        tokens, start = [], 0
        for piece in prompt_pieces(parsed[0]["inputs"]):
            tokens.append({"id": piece_id(piece), "text": piece, "start": start, "stop": start + len(piece)})
            start += len(piece)
        return JSONResponse(tokens)

    async def root(self, request: Request) -> Response:
        return await (self.compat_generate(request) if request.method == "POST" else self.health(request))

    async def health(self, request: Request) -> Response:
        if self.state.faults.active(FaultKind.LOADING):
            return JSONResponse({"error": "unhealthy", "error_type": "healthcheck"}, 503)
        return Response()

    async def info(self, request: Request) -> Response:
        return JSONResponse(
            {
                "model_id": self.model,
                "model_sha": None,
                "model_pipeline_tag": "text-generation",
                "max_concurrent_requests": 128,
                "max_best_of": 2,
                "max_stop_sequences": 4,
                "max_input_tokens": 4095,
                "max_total_tokens": 4096,
                "validation_workers": 2,
                "max_client_batch_size": 4,
                "router": "text-generation-router",
                "version": VERSION,
                "sha": "db931fcf42da018a3657580c64bf2720f167f9ab",
                "docker_label": None,
            }
        )

    async def models(self, request: Request) -> Response:
        card = {"id": self.model, "object": "model", "created": 0, "owned_by": self.model}
        return JSONResponse({"object": "list", "data": [card]})

    async def metrics(self, request: Request) -> Response:
        c = self.state.counters
        text = f"tgi_request_count {c.requests}\ntgi_request_success {c.requests}\ntgi_queue_size 0\n"
        return PlainTextResponse(text)


def create_app(config: SimulatorConfig) -> ASGIApp:
    sim = Simulator(config)
    return Starlette(
        routes=[
            Route("/", sim.root, methods=["GET", "POST"]),
            Route("/health", sim.health),
            Route("/ping", sim.health),
            Route("/info", sim.info),
            Route("/metrics", sim.metrics),
            Route("/v1/models", sim.models),
            Route("/generate", sim.generate, methods=["POST"]),
            Route("/generate_stream", sim.generate_stream, methods=["POST"]),
            Route("/tokenize", sim.tokenize, methods=["POST"]),
            Route("/v1/chat/completions", sim.chat_completions, methods=["POST"]),
            Route("/v1/completions", sim.completions, methods=["POST"]),
        ],
        # axum's fallback: an unknown route is 404, a known one with another method 405, both with an empty body.
        exception_handlers={404: _empty_status, 405: _empty_status},
    )


async def _empty_status(request: Request, exc: Exception) -> Response:
    return Response(status_code=getattr(exc, "status_code", 404))
