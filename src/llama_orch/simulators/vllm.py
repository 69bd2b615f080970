"""vLLM's OpenAI-compatible server: `data: {...}` chunks serialized without unset keys, a usage chunk only with
`stream_options.include_usage`, `data: [DONE]` always (after an in-stream error too), errors
`{"error":{"message","type","param","code"}}`, /health with an empty body."""

from __future__ import annotations

import secrets
import time
from http import HTTPStatus
from typing import Any

from starlette.applications import Starlette
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

VERSION = "0.33.0"
MAX_MODEL_LEN = 4096
PREFIX = b"data: "
DONE = sse(PREFIX, "[DONE]")
_TYPES = {400: "BadRequestError", 404: "NotFoundError", 500: "InternalServerError", 503: "ServiceUnavailableError"}


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    kind = _TYPES.get(status) or HTTPStatus(status).phrase
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": status}}, status, headers)


class _Completion:
    """One `/v1/completions` (or chat) stream: per-token chunks, the finish, the optional usage chunk, `[DONE]`."""

    def __init__(self, model: str, generation: Generation, include_usage: bool, chat: bool) -> None:
        self.generation, self.include_usage, self.chat = generation, include_usage, chat
        self.head = {
            "id": ("chatcmpl-" if chat else "cmpl-") + secrets.token_hex(16),
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()),
            "model": model,
        }
        self.finish = "length" if generation.limited else "stop"

    def _choice(self, text: str, finish: str | None, first: bool = False) -> dict[str, Any]:
        if self.chat:
            delta = {"role": "assistant", "content": text} if first else {"content": text}
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish, "stop_reason": None}

    def token(self, i: int) -> bytes:
        return sse(PREFIX, {**self.head, "choices": [self._choice(self.generation.tokens[i], None, i == 0)]})

    def usage(self) -> dict[str, int]:
        n, p = len(self.generation.tokens), self.generation.prompt_tokens
        return {"prompt_tokens": p, "total_tokens": p + n, "completion_tokens": n}

    def final(self) -> bytes:
        closing = {**self.head, "choices": [self._choice("", self.finish)]}
        if not self.include_usage:
            return sse(PREFIX, {**closing, "system_fingerprint": None}) + DONE
        return sse(PREFIX, closing) + sse(PREFIX, {**self.head, "choices": [], "usage": self.usage()}) + DONE

    def error(self) -> bytes:
        detail = {"message": "simulated engine failure", "type": "InternalServerError", "param": None, "code": 500}
        return sse(PREFIX, {"error": detail}) + DONE

    def result(self) -> dict[str, Any]:
        text = self.generation.text
        if self.chat:
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": self.finish,
                "stop_reason": None,
            }
        else:
            choice = {**self._choice(text, self.finish), "prompt_logprobs": None}
        kind = "chat.completion" if self.chat else "text_completion"
        return {**self.head, "object": kind, "choices": [choice], "usage": self.usage()}


class Simulator:
    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.model = config.model or "sim-model"
        self.state = EngineState(config)
        self.created = int(time.time())

    async def _generate(self, request: Request, chat: bool) -> Response:
        body = await read_object(request)
        if body is None:
            return error(400, "the body is not a JSON object")
        if body.get("model") not in (None, self.model):
            return error(404, f"The model `{body['model']}` does not exist.")
        options = body.get("stream_options")
        if options is not None and body.get("stream") is not True:
            return error(400, "Stream options can only be defined when `stream=True`.")
        if chat:
            messages = body.get("messages")
            if not isinstance(messages, list):
                return error(400, "messages: field required")
            prompt = as_prompt(messages)
        else:
            prompt = as_prompt(body.get("prompt", ""))
        fault = self.state.faults.take()
        refused = refusal(fault, error)
        if refused is not None:
            return refused
        limit = body.get("max_tokens")
        seed = body.get("seed")
        generation = generate(self.config, prompt, seed if isinstance(seed, int) else None, limit or 16)
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        shape = _Completion(self.model, generation, include_usage, chat)
        if body.get("stream") is True:
            return SimulatorStream(
                shape, generation, self.config, fault, prefix=PREFIX, on_close=self.state.begin(generation)
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
        lines = [
            f'vllm:num_requests_running{{model_name="{self.model}"}} {c.processing}',
            f'vllm:prompt_tokens_total{{model_name="{self.model}"}} {c.prompt_tokens}',
            f'vllm:generation_tokens_total{{model_name="{self.model}"}} {c.predicted_tokens}',
        ]
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")


def create_app(config: SimulatorConfig) -> ASGIApp:
    sim = Simulator(config)
    return Starlette(
        routes=[
            Route("/health", sim.health),
            Route("/version", sim.version),
            Route("/metrics", sim.metrics),
            Route("/v1/models", sim.models),
            Route("/tokenize", sim.tokenize, methods=["POST"]),
            Route("/detokenize", sim.detokenize, methods=["POST"]),
            Route("/v1/completions", sim.completions, methods=["POST"]),
            Route("/v1/chat/completions", sim.chat_completions, methods=["POST"]),
        ]
    )
