"""llama.cpp `llama-server`, shaped like the real recordings (reference/engines/llamacpp-transcripts): native
`/completion` (`data: {...}` without `[DONE]`, headers sent with the first token, a final `stop: true` chunk with
timings), the OpenAI surfaces (`[DONE]`, usage on the last completion chunk, a usage chunk for chat only with
`stream_options.include_usage`), and errors `{"error":{"code","message","type"}}`; 503 "Loading model" on
every route while loading."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse as StarletteJSON
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from llama_orch.simulators.core import (
    REFUSAL_MESSAGES,
    EngineState,
    Fault,
    FaultKind,
    Generation,
    Shape,
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

BUILD = "b0-unknown"
N_CTX = 4096
PREFIX = b"data: "
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    501: "not_supported_error",
    503: "unavailable_error",
}
# Settings a task reports (`generation_settings`), in the server's key order; the request fills its own values.
_SETTINGS: dict[str, Any] = {
    "seed": 4294967295, "temperature": 0.8, "dynatemp_range": 0.0, "dynatemp_exponent": 1.0, "top_k": 40,
    "top_p": 0.95, "min_p": 0.05, "top_n_sigma": -1.0, "xtc_probability": 0.0, "xtc_threshold": 0.1,
    "typical_p": 1.0, "repeat_last_n": 64, "repeat_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0,
    "dry_multiplier": 0.0, "dry_base": 1.75, "dry_allowed_length": 2, "dry_penalty_last_n": 64,
    "dry_sequence_breakers": ["\n", ":", '"', "*"], "mirostat": 0, "mirostat_tau": 5.0, "mirostat_eta": 0.1,
    "adaptive_target": -1.0, "adaptive_decay": 0.9, "stop": [], "max_tokens": -1, "n_predict": -1, "n_keep": 0,
    "n_discard": 0, "ignore_eos": False, "stream": False, "logit_bias": [], "n_probs": 0, "min_keep": 0,
    "grammar": "", "grammar_lazy": False, "grammar_triggers": [], "preserved_tokens": [],
    "chat_format": "Content-only", "reasoning_format": "deepseek", "reasoning_in_content": False,
    "generation_prompt": "", "samplers": ["penalties", "dry", "top_n_sigma", "top_k", "typ_p", "top_p", "min_p",
    "xtc", "temperature"], "speculative.types": "none", "timings_per_token": False, "post_sampling_probs": False,
    "backend_sampling": False, "lora": [],
}  # fmt: skip
_FROM_REQUEST = ("seed", "temperature", "top_k", "top_p", "min_p", "repeat_penalty", "stop", "ignore_eos", "stream")
TEMPLATE = "<|im_start|>{role}\n{content}<|im_end|>\n"


class JSONResponse(StarletteJSON):
    media_type = "application/json; charset=utf-8"  # as llama-server labels its JSON


def error_body(status: int, message: str, *, routed: bool = True) -> dict[str, Any]:
    """The handlers' errors list `code` first; the pre-routing ones (loading, key, unknown route) list it last."""
    kind = _TYPES.get(status, "server_error")
    if routed:
        return {"error": {"code": status, "message": message, "type": kind}}
    return {"error": {"message": message, "type": kind, "code": status}}


def error(status: int, message: str, *, routed: bool = True, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(error_body(status, message, routed=routed), status, headers=headers)


def _limit(body: dict[str, Any]) -> int | None:
    for key in ("n_predict", "max_tokens", "max_completion_tokens"):  # n_predict wins, as in llama.cpp
        if isinstance(body.get(key), int):
            return int(body[key])
    return None


def _seed(body: dict[str, Any]) -> int | None:
    return body["seed"] if isinstance(body.get("seed"), int) else None


def _chat_prompt(messages: list[Any]) -> str:
    rendered = ""
    for message in messages:
        content = message.get("content")
        text = content if isinstance(content, str) else as_prompt(content) if content is not None else ""
        rendered += TEMPLATE.format(role=message.get("role", ""), content=text)
    return rendered + "<|im_start|>assistant\n"


class Simulator:
    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.model = config.model or "models/sim.gguf"
        self.state = EngineState(config)
        self.started = int(time.time())

    # -- generation ---------------------------------------------------------------------------------------------

    async def _begin(self, request: Request) -> tuple[dict[str, Any], Fault | None] | Response:
        """The body and the fault of a generation request, or the answer that ends it early."""
        body = await read_object(request)
        if body is None:
            return error(400, "[json.exception.parse_error.101] parse error: the body is not a JSON object")
        fault = self.state.faults.take()
        return refusal(fault, self._refuse) or (body, fault)

    @staticmethod
    def _refuse(status: int, message: str, headers: dict[str, str] | None) -> Response:
        # "Loading model" is answered before routing, in that path's key order.
        return error(status, message, routed=status != 503, headers=headers)

    def _answer(
        self,
        body: dict[str, Any],
        shape: Shape,
        generation: Generation,
        fault: Fault | None,
        result: Callable[[], dict[str, Any]],
    ) -> Response:
        """The stream when the body asks for one, else the whole `result` at once."""
        if body.get("stream") is True:
            return SimulatorStream(
                shape,
                generation,
                self.config,
                fault,
                prefix=PREFIX,
                headers_with_first_token=True,
                on_close=self.state.begin(generation),
            )
        self.state.begin(generation)()
        return JSONResponse(result())

    async def completion(self, request: Request) -> Response:
        begun = await self._begin(request)
        if isinstance(begun, Response):
            return begun
        body, fault = begun
        prompt = as_prompt(body.get("prompt", ""))
        generation = generate(self.config, prompt, _seed(body), _limit(body))
        native = _Native(self, body, prompt, generation)
        return self._answer(body, native, generation, fault, lambda: native.result(generation.text))

    async def v1_completions(self, request: Request) -> Response:
        begun = await self._begin(request)
        if isinstance(begun, Response):
            return begun
        body, fault = begun
        prompt = as_prompt(body.get("prompt", ""))
        generation = generate(self.config, prompt, _seed(body), _limit(body))
        shape = _OpenAiText(self, generation)
        return self._answer(body, shape, generation, fault, shape.result)

    async def v1_chat_completions(self, request: Request) -> Response:
        begun = await self._begin(request)
        if isinstance(begun, Response):
            return begun
        body, fault = begun
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            return error(400, "'messages' is required and must be a non-empty array of objects")
        generation = generate(self.config, _chat_prompt(messages), _seed(body), _limit(body))
        options = body.get("stream_options")
        usage = isinstance(options, dict) and options.get("include_usage") is True
        shape = _OpenAiChat(self, generation, usage)
        return self._answer(body, shape, generation, fault, shape.result)

    # -- the rest -----------------------------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def props(self, request: Request) -> Response:
        return JSONResponse(
            {
                "default_generation_settings": {"params": _SETTINGS, "n_ctx": N_CTX},
                "total_slots": self.config.slots,
                "model_alias": self.model,
                "model_ftype": "(guessed) all F32",
                "model_path": self.model,
                "modalities": {"vision": False, "video": False, "audio": False},
                "media_marker": "<__media__>",
                "endpoint_slots": True,
                "endpoint_props": False,
                "endpoint_metrics": True,
                "ui": False,
                "ui_settings": {},
                "chat_template": TEMPLATE,
                "chat_template_caps": {"supports_string_content": True, "supports_system_role": True},
                "bos_token": "<s>",
                "eos_token": "</s>",
                "build_info": BUILD,
                "is_sleeping": False,
                "cors_proxy_enabled": False,
            }
        )

    async def slots(self, request: Request) -> Response:
        busy = self.state.counters.processing
        slots = [
            {"id": i, "n_ctx": N_CTX, "speculative": False, "is_processing": i < busy} for i in range(self.config.slots)
        ]
        if request.query_params.get("fail_on_no_slot") == "1" and busy >= self.config.slots:
            return error(503, "no slot available")
        return JSONResponse(slots)

    async def metrics(self, request: Request) -> Response:
        c = self.state.counters
        values = {
            "prompt_tokens_total": ("counter", c.prompt_tokens),
            "tokens_predicted_total": ("counter", c.predicted_tokens),
            "n_decode_total": ("counter", c.predicted_tokens),
            "requests_processing": ("gauge", c.processing),
            "requests_deferred": ("gauge", 0),
        }
        text = "".join(
            f"# HELP llamacpp:{name} {name}\n# TYPE llamacpp:{name} {kind}\nllamacpp:{name} {value}\n"
            for name, (kind, value) in values.items()
        )
        headers = {"Process-Start-Time-Unix": str(self.started)}
        return PlainTextResponse(text, headers=headers, media_type="text/plain; version=0.0.4")

    async def tokenize(self, request: Request) -> Response:
        body = await read_object(request) or {}
        content = body.get("content")
        pieces = prompt_pieces(as_prompt(content)) if content is not None else []
        if body.get("with_pieces") is True:
            return JSONResponse({"tokens": [{"id": piece_id(p), "piece": p} for p in pieces]})
        return JSONResponse({"tokens": [piece_id(p) for p in pieces]})

    async def detokenize(self, request: Request) -> Response:
        tokens = (await read_object(request) or {}).get("tokens")
        return JSONResponse({"content": "".join(f" t{t}" for t in tokens or [])})

    async def apply_template(self, request: Request) -> Response:
        messages = (await read_object(request) or {}).get("messages")
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            return error(400, "'messages' is required")
        return JSONResponse({"prompt": _chat_prompt(messages)})

    async def v1_models(self, request: Request) -> Response:
        entry = {
            "id": self.model,
            "aliases": [self.model],
            "tags": [],
            "object": "model",
            "architecture": {"input_modalities": ["text"], "output_modalities": ["text"]},
            "created": self.started,
            "owned_by": "llamacpp",
        }
        return JSONResponse({"models": [{"name": self.model, "model": self.model}], "object": "list", "data": [entry]})

    async def not_supported(self, request: Request) -> Response:
        return error(501, "This server does not support this endpoint (simulator)")


class _Native:
    """`/completion`: partial chunks, then the full result with `stop: true` (recorded key order)."""

    def __init__(self, sim: Simulator, body: dict[str, Any], prompt: str, generation: Generation) -> None:
        self.sim, self.body, self.prompt, self.generation = sim, body, prompt, generation
        self.began = time.perf_counter()
        evaluated = generation.prompt_tokens
        # Everything but the content and the token id is the same for each partial chunk: format it once.
        self._head = b'data: {"index":0,"content":'
        self._tail = b',"stop":false,"id_slot":-1,"tokens_predicted":%d,"tokens_evaluated":' + str(evaluated).encode()
        self._contents = [json.dumps(t, ensure_ascii=False).encode() for t in generation.tokens]

    def token(self, i: int) -> bytes:
        ids = b',"tokens":[%d]' % self.generation.ids[i]
        return self._head + self._contents[i] + ids + self._tail % (i + 1) + b"}\n\n"

    def result(self, content: str) -> dict[str, Any]:
        g = self.generation
        settings = dict(_SETTINGS)
        settings.update({k: self.body[k] for k in _FROM_REQUEST if k in self.body})
        limit = _limit(self.body)
        settings["n_predict"] = settings["max_tokens"] = -1 if limit is None else limit
        return {
            "index": 0,
            "content": content,
            "tokens": [],
            "id_slot": 0,
            "stop": True,
            "model": self.sim.model,
            "tokens_predicted": len(g.tokens),
            "tokens_evaluated": g.prompt_tokens,
            "generation_settings": settings,
            "prompt": "<s> " + self.prompt,
            "has_new_line": "\n" in content,
            "truncated": False,
            "stop_type": "limit" if g.limited else "eos",
            "stopping_word": "",
            "tokens_cached": g.prompt_tokens + len(g.tokens),
            "timings": timings(g, self.began),
        }

    def final(self) -> bytes:
        return sse(PREFIX, self.result(""))

    def error(self) -> bytes:
        return sse(PREFIX, error_body(500, "simulated decode failure"))


def timings(generation: Generation, began: float) -> dict[str, Any]:
    ms = (time.perf_counter() - began) * 1000.0
    n, p = len(generation.tokens), generation.prompt_tokens
    return {
        "cache_n": 0,
        "prompt_n": p,
        "prompt_ms": 0.0,
        "prompt_per_token_ms": 0.0,
        "prompt_per_second": 0.0,
        "predicted_n": n,
        "predicted_ms": ms,
        "predicted_per_token_ms": ms / n if n else 0.0,
        "predicted_per_second": n * 1000.0 / ms if n and ms else 0.0,
    }


def usage(generation: Generation) -> dict[str, Any]:
    n, p = len(generation.tokens), generation.prompt_tokens
    return {
        "completion_tokens": n,
        "prompt_tokens": p,
        "total_tokens": n + p,
        "prompt_tokens_details": {"cached_tokens": 0},
    }


class _OpenAi:
    object: str

    def __init__(self, sim: Simulator, generation: Generation) -> None:
        self.sim, self.generation = sim, generation
        self.id = "chatcmpl-" + secrets.token_urlsafe(24)[:32]
        self.created = int(time.time())
        self.began = time.perf_counter()
        self.finish = "length" if generation.limited else "stop"

    def error(self) -> bytes:
        return sse(PREFIX, error_body(500, "simulated decode failure"))


class _OpenAiText(_OpenAi):
    """`/v1/completions`: the last chunk carries finish_reason, usage (always) and timings, then `[DONE]`."""

    def _chunk(self, text: str, finish: str | None, final: bool = False) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
            "created": self.created,
            "model": self.sim.model,
            "system_fingerprint": BUILD,
            "object": "text_completion",
        }
        if final:
            chunk["usage"] = usage(self.generation)
        chunk["id"] = self.id
        if final:
            chunk["timings"] = timings(self.generation, self.began)
        return chunk

    def token(self, i: int) -> bytes:
        return sse(PREFIX, self._chunk(self.generation.tokens[i], None))

    def result(self, text: str | None = None) -> dict[str, Any]:
        return self._chunk(self.generation.text if text is None else text, self.finish, final=True)

    def final(self) -> bytes:
        return sse(PREFIX, self.result("")) + sse(PREFIX, "[DONE]")


class _OpenAiChat(_OpenAi):
    """`/v1/chat/completions`: a role delta, content deltas, a finish chunk, a usage chunk when asked, `[DONE]`."""

    def __init__(self, sim: Simulator, generation: Generation, include_usage: bool) -> None:
        super().__init__(sim, generation)
        self.include_usage = include_usage

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "choices": choices,
            "created": self.created,
            "id": self.id,
            "model": self.sim.model,
            "system_fingerprint": BUILD,
            "object": "chat.completion.chunk",
            **extra,
        }

    def _delta(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return self._chunk([{"finish_reason": finish, "index": 0, "delta": delta}])

    def token(self, i: int) -> bytes:
        chunk = sse(PREFIX, self._delta({"content": self.generation.tokens[i]}))
        return sse(PREFIX, self._delta({"role": "assistant", "content": None})) + chunk if i == 0 else chunk

    def final(self) -> bytes:
        stats = timings(self.generation, self.began)
        if not self.include_usage:
            return sse(PREFIX, {**self._delta({}, self.finish), "timings": stats}) + sse(PREFIX, "[DONE]")
        closing = self._chunk([], usage=usage(self.generation), timings=stats)
        return sse(PREFIX, self._delta({}, self.finish)) + sse(PREFIX, closing) + sse(PREFIX, "[DONE]")

    def result(self) -> dict[str, Any]:
        message = {"role": "assistant", "content": self.generation.text}
        return {
            "choices": [{"finish_reason": self.finish, "index": 0, "message": message}],
            "created": self.created,
            "model": self.sim.model,
            "system_fingerprint": BUILD,
            "object": "chat.completion",
            "usage": usage(self.generation),
            "id": self.id,
            "timings": timings(self.generation, self.began),
        }


def create_app(config: SimulatorConfig) -> ASGIApp:
    sim = Simulator(config)
    routes = [
        Route(path, endpoint, methods=[method])
        for path, method, endpoint in (
            ("/health", "GET", sim.health),
            ("/v1/health", "GET", sim.health),
            ("/props", "GET", sim.props),
            ("/props", "POST", sim.not_supported),
            ("/slots", "GET", sim.slots),
            ("/slots/{id_slot}", "POST", sim.not_supported),
            ("/metrics", "GET", sim.metrics),
            ("/completion", "POST", sim.completion),
            ("/completions", "POST", sim.completion),
            ("/infill", "POST", sim.not_supported),
            ("/tokenize", "POST", sim.tokenize),
            ("/detokenize", "POST", sim.detokenize),
            ("/apply-template", "POST", sim.apply_template),
            ("/v1/models", "GET", sim.v1_models),
            ("/models", "GET", sim.v1_models),
            ("/v1/completions", "POST", sim.v1_completions),
            ("/v1/chat/completions", "POST", sim.v1_chat_completions),
            ("/chat/completions", "POST", sim.v1_chat_completions),
        )
    ]
    app = Starlette(routes=routes, exception_handlers={404: _not_found, 405: _not_found})
    return _loading_gate(app, sim)


_GENERATION = frozenset({"/completion", "/completions", "/v1/completions", "/v1/chat/completions", "/chat/completions"})


def _loading_gate(app: ASGIApp, sim: Simulator) -> ASGIApp:
    """While loading, llama-server answers every route 503 before routing (generation routes take the fault
    themselves, so `times` counts generation requests only)."""

    async def gate(scope: Scope, receive: Receive, send: Send) -> None:
        loading = scope["type"] == "http" and scope["path"] not in _GENERATION
        if loading and sim.state.faults.active(FaultKind.LOADING):
            await error(503, REFUSAL_MESSAGES[FaultKind.LOADING], routed=False)(scope, receive, send)
            return
        await app(scope, receive, send)

    return gate


async def _not_found(request: Request, exc: Exception) -> Response:
    return error(404, "File Not Found", routed=False)
