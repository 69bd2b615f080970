"""Hugging Face TGI's router: `/generate_stream` as `data:{...}` (no space, no end marker), the last event with
`generated_text` (and `details` when asked); every failure after the body is parsed (overload, generation)
arrives inside the stream under 200 as `{"error","error_type"}`, as TGI does; /health 503 while unhealthy."""

from __future__ import annotations

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
    SimulatorConfig,
    SimulatorStream,
    generate,
    read_object,
    sse,
)

__all__ = ["create_app"]

VERSION = "3.3.6"
PREFIX = b"data:"
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


class _Stream:
    def __init__(self, generation: Generation, seed: int | None, details: bool, refused: str | None) -> None:
        self.generation, self.seed, self.details = generation, seed, details
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
        if g.limited and i == len(g.tokens) - 1:  # the last allowed token carries the result
            return sse(PREFIX, self._event(i + 1, (g.ids[i], g.tokens[i]), **self._result("length", i + 1)))
        return sse(PREFIX, self._event(i + 1, (g.ids[i], g.tokens[i])))

    def _result(self, finish: str, generated: int) -> dict[str, Any]:
        details = {
            "finish_reason": finish,
            "generated_tokens": generated,
            "seed": self.seed,
            "input_length": self.generation.prompt_tokens,
        }
        return {"generated_text": self.generation.text, "details": details if self.details else None}

    def final(self) -> bytes:
        g = self.generation
        if g.limited and g.tokens:
            return b""  # the last token event already carried the result
        n = len(g.tokens)
        return sse(PREFIX, self._event(n + 1, EOS, special=True, **self._result("eos_token", n + 1)))

    def error(self) -> bytes:
        return sse(PREFIX, _error(self.refused or "generation"))


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
        return body, generate(self.config, body["inputs"], seed, limit if isinstance(limit, int) else None)

    async def generate_stream(self, request: Request) -> Response:
        parsed = await self._request(request)
        if isinstance(parsed, Response):
            return parsed
        body, generation = parsed
        parameters = body.get("parameters") or {}
        fault = self.state.faults.take()
        refused = _ERROR_TYPES[fault.kind] if fault is not None and fault.kind in REFUSALS else None
        if refused is not None:  # answered in the stream, before any token
            fault = Fault(FaultKind.IN_STREAM_ERROR, after_tokens=0)
        shape = _Stream(generation, parameters.get("seed"), parameters.get("details") is True, refused)
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
        body, generation = parsed
        parameters = body.get("parameters") or {}
        fault = self.state.faults.take()
        if fault is not None and fault.kind in REFUSALS:
            kind = _ERROR_TYPES[fault.kind]
            status = 429 if kind == "overloaded" else 424
            headers = {"Retry-After": str(fault.retry_after_s)} if status == 429 else None
            return JSONResponse(_error(kind), status, headers=headers)
        self.state.begin(generation)()
        result: dict[str, Any] = {"generated_text": generation.text}
        if parameters.get("details") is True:
            tokens = [
                {"id": i, "text": t, "logprob": -0.5, "special": False}
                for i, t in zip(generation.ids, generation.tokens, strict=True)
            ]
            finish = "length" if generation.limited else "eos_token"
            result["details"] = {
                "finish_reason": finish,
                "generated_tokens": len(tokens),
                "seed": parameters.get("seed"),
                "prefill": [],
                "tokens": tokens,
            }
        return JSONResponse(result)

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
            Route("/health", sim.health),
            Route("/info", sim.info),
            Route("/metrics", sim.metrics),
            Route("/v1/models", sim.models),
            Route("/generate", sim.generate, methods=["POST"]),
            Route("/generate_stream", sim.generate_stream, methods=["POST"]),
        ]
    )
