"""Triton with a TensorRT-LLM `ensemble`: `/v2/models/{model}/generate_stream` as `data: {...}` per token with no
end marker (EOF ends it), errors `{"error": str}`, health routes answering 400 (not 503) when not ready."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from llama_orch.simulators.core import (
    EngineState,
    FaultKind,
    Generation,
    SimulatorConfig,
    SimulatorStream,
    generate,
    read_object,
    refusal,
    sse,
)

__all__ = ["create_app"]

VERSION = "2.73.0"
PREFIX = b"data: "
_TENSORS = [
    {"name": "text_input", "datatype": "BYTES", "shape": [-1]},
    {"name": "max_tokens", "datatype": "INT32", "shape": [-1]},
]


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": message}, status, headers=headers)


class _Stream:
    def __init__(self, model: str, generation: Generation) -> None:
        self.head = {"model_name": model, "model_version": "1"}
        self.generation = generation

    def token(self, i: int) -> bytes:
        return sse(PREFIX, {**self.head, "sequence_end": False, "text_output": self.generation.tokens[i]})

    def final(self) -> bytes:
        return b""  # Triton's stream has no end marker: it just ends

    def error(self) -> bytes:
        return sse(PREFIX, {"error": "in-flight batcher: simulated failure"})


class Simulator:
    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.model = config.model or "ensemble"
        self.state = EngineState(config)

    def _unknown(self, model: str) -> Response | None:
        if model == self.model:
            return None
        return error(400, f"Request for unknown model: '{model}' is not found")

    async def _generate(self, request: Request, stream: bool) -> Response:
        unknown = self._unknown(request.path_params["model"])
        if unknown is not None:
            return unknown
        body = await read_object(request)
        if body is None or not isinstance(body.get("text_input"), str):
            return error(400, "failed to parse the request JSON buffer")
        fault = self.state.faults.take()
        refused = refusal(fault, error)
        if refused is not None:
            return refused
        limit, seed = body.get("max_tokens"), body.get("seed")
        generation = generate(
            self.config,
            body["text_input"],
            seed if isinstance(seed, int) else None,
            limit if isinstance(limit, int) else None,
        )
        shape = _Stream(self.model, generation)
        if stream:
            return SimulatorStream(
                shape, generation, self.config, fault, prefix=PREFIX, on_close=self.state.begin(generation)
            )
        self.state.begin(generation)()
        return JSONResponse({**shape.head, "sequence_end": True, "text_output": generation.text})

    async def generate(self, request: Request) -> Response:
        return await self._generate(request, stream=False)

    async def generate_stream(self, request: Request) -> Response:
        return await self._generate(request, stream=True)

    def _ready(self) -> bool:
        return not self.state.faults.active(FaultKind.LOADING)

    async def live(self, request: Request) -> Response:
        return Response()

    async def ready(self, request: Request) -> Response:
        return Response(status_code=200 if self._ready() else 400)

    async def model_ready(self, request: Request) -> Response:
        unknown = self._unknown(request.path_params["model"])
        if unknown is not None:
            return unknown
        return Response() if self._ready() else error(400, "Model version not ready")

    async def server(self, request: Request) -> Response:
        extensions = ["classification", "sequence", "model_repository", "schedule_policy", "model_configuration"]
        return JSONResponse({"name": "triton", "version": VERSION, "extensions": extensions})

    async def metadata(self, request: Request) -> Response:
        unknown = self._unknown(request.path_params["model"])
        if unknown is not None:
            return unknown
        outputs: list[dict[str, Any]] = [{"name": "text_output", "datatype": "BYTES", "shape": [-1]}]
        return JSONResponse(
            {"name": self.model, "versions": ["1"], "platform": "ensemble", "inputs": _TENSORS, "outputs": outputs}
        )


def create_app(config: SimulatorConfig) -> ASGIApp:
    sim = Simulator(config)
    return Starlette(
        routes=[
            Route("/v2", sim.server),
            Route("/v2/health/live", sim.live),
            Route("/v2/health/ready", sim.ready),
            Route("/v2/models/{model}", sim.metadata),
            Route("/v2/models/{model}/ready", sim.model_ready),
            Route("/v2/models/{model}/generate", sim.generate, methods=["POST"]),
            Route("/v2/models/{model}/generate_stream", sim.generate_stream, methods=["POST"]),
        ]
    )
