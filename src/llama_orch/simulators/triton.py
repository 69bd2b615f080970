"""Triton with a TensorRT-LLM `ensemble`: `/v2/models/{model}/generate_stream` as `data: {...}` per token with no
end marker (EOF ends it), errors `{"error": str}`, health routes answering 400 (not 503) when not ready. The KServe
v2 core that tritonclient calls is served too: the repository index, the model config, and `infer` with JSON
tensors or the binary tensor data extension (what tritonclient sends by default)."""

from __future__ import annotations

import gzip
import json
import struct
import time
import zlib
from collections.abc import Awaitable, Callable
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
    one_shot,
    read_object,
    refusal,
    sse,
)

__all__ = ["create_app"]

VERSION = "2.73.0"
PREFIX = b"data: "
MAX_BATCH_SIZE = 64
# The ensemble's inputs as TensorRT-LLM's ensemble/config.pbtxt declares them: name -> (KServe datatype, dims
# without the batch dimension, optional). Only text_input, max_tokens, seed and exclude_input_in_output change
# what the simulator answers; the others are accepted (and type-checked) as the real ensemble accepts them.
_INPUTS: dict[str, tuple[str, list[int], bool]] = {
    "text_input": ("BYTES", [1], False),
    "decoder_text_input": ("BYTES", [1], True),
    "max_tokens": ("INT32", [1], False),
    "num_return_sequences": ("INT32", [1], True),
    "bad_words": ("BYTES", [-1], True),
    "stop_words": ("BYTES", [-1], True),
    "exclude_input_in_output": ("BOOL", [1], True),
    "end_id": ("INT32", [1], True),
    "pad_id": ("INT32", [1], True),
    "top_k": ("INT32", [1], True),
    "top_p": ("FP32", [1], True),
    "temperature": ("FP32", [1], True),
    "length_penalty": ("FP32", [1], True),
    "repetition_penalty": ("FP32", [1], True),
    "min_tokens": ("INT32", [1], True),
    "presence_penalty": ("FP32", [1], True),
    "frequency_penalty": ("FP32", [1], True),
    "seed": ("UINT64", [1], True),
    "return_log_probs": ("BOOL", [1], True),
    "return_context_logits": ("BOOL", [1], True),
    "return_generation_logits": ("BOOL", [1], True),
    "return_perf_metrics": ("BOOL", [1], True),
    "return_num_input_tokens": ("BOOL", [1], True),
    "return_num_output_tokens": ("BOOL", [1], True),
    "beam_width": ("INT32", [1], True),
    "stream": ("BOOL", [1], True),
    "embedding_bias_words": ("BYTES", [-1], True),
    "embedding_bias_weights": ("FP32", [-1], True),
    "lora_task_id": ("UINT64", [1], True),
    "guided_decoding_guide_type": ("BYTES", [1], True),
    "guided_decoding_guide": ("BYTES", [1], True),
}
# Its outputs (a subset: the logits and KV-cache/timing statistics are left out): name -> (datatype, dims).
_OUTPUTS: dict[str, tuple[str, list[int]]] = {
    "text_output": ("BYTES", [-1]),
    "cum_log_probs": ("FP32", [-1]),
    "output_log_probs": ("FP32", [-1, -1]),
    "batch_index": ("INT32", [1]),
    "sequence_index": ("INT32", [1]),
    "num_input_tokens": ("INT32", [1]),
    "num_output_tokens": ("INT32", [1]),
}
LOGPROB = -0.5  # every simulated token's log probability
_CONFIG_TYPES = {"BYTES": "TYPE_STRING"}
# Fixed-size element layouts of the binary tensor data extension (little-endian); BYTES is length-prefixed.
_BINARY = {"BOOL": "?", "INT32": "<i", "INT64": "<q", "UINT64": "<Q", "FP32": "<f", "FP64": "<d"}
# The KServe infer request header's length when binary tensor data follows it.
HEADER_LENGTH = "Inference-Header-Content-Length"


class InferError(Exception):
    """A request `infer` refuses with Triton's 400 and this message."""


def error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": message}, status, headers=headers)


def _decode_binary(datatype: str, raw: bytes) -> list[Any]:
    if datatype == "BYTES":
        values, at = [], 0
        while at < len(raw):
            (size,) = struct.unpack_from("<I", raw, at)
            values.append(raw[at + 4 : at + 4 + size].decode("utf-8", errors="replace"))
            at += 4 + size
        return values
    layout = _BINARY.get(datatype)
    if layout is None:
        raise InferError(f"unsupported binary datatype '{datatype}'")
    return [v for (v,) in struct.iter_unpack(layout, raw)]


def _flatten(data: Any) -> list[Any]:
    return [v for item in data for v in _flatten(item)] if isinstance(data, list) else [data]


def _read_inputs(header: dict[str, Any], binary: bytes, model: str) -> dict[str, list[Any]]:
    """The request's input tensors by name, flattened (JSON `data`, or `binary_data_size` bytes of the tail)."""
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise InferError("failed to parse the request JSON buffer: 'inputs' must be a non-empty array")
    tensors: dict[str, list[Any]] = {}
    at = 0
    for tensor in inputs:
        name = tensor.get("name") if isinstance(tensor, dict) else None
        if name not in _INPUTS:
            raise InferError(f"unexpected inference input '{name}' for model '{model}'")
        expected = _INPUTS[name][0]
        if tensor.get("datatype") != expected:
            raise InferError(
                f"inference input '{name}' data-type is '{tensor.get('datatype')}', but model '{model}' "
                f"expects '{expected}'"
            )
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        if isinstance(size, int):
            tensors[name] = _decode_binary(expected, binary[at : at + size])
            at += size
        elif "data" in tensor:
            tensors[name] = _flatten(tensor["data"])
        else:
            raise InferError(f"expecting 'data' or binary data for input '{name}'")
    missing = [n for n, (_, _, optional) in _INPUTS.items() if not optional and n not in tensors]
    if missing:
        raise InferError(
            f"expected number of inputs between 2 and {len(_INPUTS)} but got {len(tensors)} inputs for model "
            f"'{model}'. Got input(s) {sorted(tensors)}, but missing required input(s) {missing}. "
            "Please provide all required input(s)."
        )
    return tensors


def _config_type(datatype: str) -> str:
    return _CONFIG_TYPES.get(datatype, f"TYPE_{datatype}")


def _encode_binary(datatype: str, values: list[Any]) -> bytes:
    if datatype == "BYTES":
        return b"".join(struct.pack("<I", len(b)) + b for b in (str(v).encode() for v in values))
    return b"".join(struct.pack(_BINARY[datatype], v) for v in values)


def _outputs(generations: list[Generation], texts: list[str]) -> dict[str, Any]:
    """Every output of a batch: name -> (shape, flat values)."""
    batch = len(generations)
    widest = max((len(g.tokens) for g in generations), default=0)
    return {
        "text_output": ([batch, 1], texts),
        "cum_log_probs": ([batch, 1], [LOGPROB * len(g.tokens) for g in generations]),
        "output_log_probs": (
            [batch, 1, widest],
            [LOGPROB if i < len(g.tokens) else 0.0 for g in generations for i in range(widest)],
        ),
        "batch_index": ([batch, 1], list(range(batch))),
        "sequence_index": ([batch, 1], [0] * batch),
        "num_input_tokens": ([batch, 1], [g.prompt_tokens for g in generations]),
        "num_output_tokens": ([batch, 1], [len(g.tokens) for g in generations]),
    }


def _infer_answer(head: dict[str, Any], values: dict[str, Any], requested: dict[str, bool]) -> Response:
    """The infer response: each requested output (name -> binary?) as JSON `data`, or as binary data after the
    JSON header (then the header's length is in `Inference-Header-Content-Length`)."""
    outputs, tail = [], b""
    for name, binary in requested.items():
        datatype = _OUTPUTS[name][0]
        shape, data = values[name]
        output: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
        if binary:
            raw = _encode_binary(datatype, data)
            outputs.append({**output, "parameters": {"binary_data_size": len(raw)}})
            tail += raw
        else:
            outputs.append({**output, "data": data})
    answer = {**head, "outputs": outputs}
    if not any(requested.values()):
        return JSONResponse(answer)
    header = json.dumps(answer, separators=(",", ":")).encode()
    return Response(header + tail, media_type="application/octet-stream", headers={HEADER_LENGTH: str(len(header))})


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
        self.last_inference_ms = 0

    def _begin(self, generation: Generation) -> Callable[[], None]:
        self.last_inference_ms = int(time.time() * 1000)
        return self.state.begin(generation)

    def _unknown(self, request: Request) -> Response | None:
        """Triton's error for a model (or version: only 1 exists) it does not serve, else None."""
        model, version = request.path_params["model"], request.path_params.get("version")
        if model != self.model:
            return error(400, f"Request for unknown model: '{model}' is not found")
        if version not in (None, 1):
            return error(400, f"Request for unknown model: '{model}' version {version} is not found")
        return None

    async def _generate(self, request: Request, stream: bool) -> Response:
        unknown = self._unknown(request)
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
                shape, generation, self.config, fault, prefix=PREFIX, on_close=self._begin(generation)
            )
        self._begin(generation)()
        # TensorRT-LLM returns the prompt and the generated text unless told to exclude the input.
        text = generation.text if body.get("exclude_input_in_output") is True else body["text_input"] + generation.text
        answer = JSONResponse({**shape.head, "sequence_end": True, "text_output": text})
        return one_shot(answer, self.config, fault)

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
        unknown = self._unknown(request)
        if unknown is not None:
            return unknown
        return Response() if self._ready() else error(400, "Model version not ready")

    async def server(self, request: Request) -> Response:
        extensions = [
            "classification",
            "sequence",
            "model_repository",
            "schedule_policy",
            "model_configuration",
            "statistics",
        ]
        return JSONResponse({"name": "triton", "version": VERSION, "extensions": extensions})

    async def metadata(self, request: Request) -> Response:
        unknown = self._unknown(request)
        if unknown is not None:
            return unknown
        # A batching model's shapes lead with the batch dimension, -1.
        inputs = [{"name": n, "datatype": t, "shape": [-1, *dims]} for n, (t, dims, _) in _INPUTS.items()]
        outputs = [{"name": n, "datatype": t, "shape": [-1, *dims]} for n, (t, dims) in _OUTPUTS.items()]
        return JSONResponse(
            {"name": self.model, "versions": ["1"], "platform": "ensemble", "inputs": inputs, "outputs": outputs}
        )

    async def model_config(self, request: Request) -> Response:
        unknown = self._unknown(request)
        if unknown is not None:
            return unknown
        inputs = [
            {"name": n, "data_type": _config_type(t), "format": "FORMAT_NONE", "dims": dims}
            | {"is_shape_tensor": False, "allow_ragged_batch": False, "optional": optional}
            for n, (t, dims, optional) in _INPUTS.items()
        ]
        outputs = [
            {"name": n, "data_type": _config_type(t), "dims": dims, "label_filename": "", "is_shape_tensor": False}
            for n, (t, dims) in _OUTPUTS.items()
        ]
        steps: list[dict[str, Any]] = [
            {"model_name": name, "model_version": -1, "input_map": {}, "output_map": {}}
            for name in ("preprocessing", "tensorrt_llm", "postprocessing")
        ]
        return JSONResponse(
            {
                "name": self.model,
                "platform": "ensemble",
                "backend": "",
                "runtime": "",
                "version_policy": {"latest": {"num_versions": 1}},
                "max_batch_size": MAX_BATCH_SIZE,
                "input": inputs,
                "output": outputs,
                "batch_input": [],
                "batch_output": [],
                "ensemble_scheduling": {"step": steps},
                "model_transaction_policy": {"decoupled": False},
                "parameters": {},
            }
        )

    async def statistics(self, request: Request) -> Response:
        """Inference statistics (the statistics extension) of the served model: counts, no timings."""
        if "model" in request.path_params:
            unknown = self._unknown(request)
            if unknown is not None:
                return unknown
        count = self.state.counters.requests
        durations = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output")
        stats = {name: {"count": count if name != "fail" else 0, "ns": 0} for name in durations}
        model = {
            "name": self.model,
            "version": "1",
            "last_inference": self.last_inference_ms,
            "inference_count": count,
            "execution_count": count,
            "inference_stats": stats | {"cache_hit": {"count": 0, "ns": 0}, "cache_miss": {"count": 0, "ns": 0}},
            "response_stats": {},
            "batch_stats": [],
            "memory_usage": [],
        }
        return JSONResponse({"model_stats": [model]})

    async def repository_index(self, request: Request) -> Response:
        body = await read_object(request) or {}
        state = "READY" if self._ready() else "LOADING"
        if body.get("ready") is True and state != "READY":
            return JSONResponse([])
        return JSONResponse([{"name": self.model, "version": "1", "state": state}])

    async def infer(self, request: Request) -> Response:
        model = request.path_params["model"]
        unknown = self._unknown(request)
        if unknown is not None:
            return unknown
        raw = await request.body()
        encoding = request.headers.get("content-encoding", "").lower()
        try:  # tritonclient's request_compression_algorithm; the header length counts the uncompressed bytes
            raw = gzip.decompress(raw) if encoding == "gzip" else zlib.decompress(raw) if encoding == "deflate" else raw
        except (OSError, zlib.error):
            return error(400, f"failed to decompress the request body ({encoding})")
        length = request.headers.get(HEADER_LENGTH)
        split = int(length) if length is not None and length.isdigit() else len(raw)
        try:
            header = json.loads(raw[:split])
        except ValueError:
            return error(400, "failed to parse the request JSON buffer: The document is not valid JSON.")
        if not isinstance(header, dict):
            return error(400, "failed to parse the request JSON buffer: the request must be a JSON object")
        try:
            tensors = _read_inputs(header, raw[split:], model)
            requested = self._requested(header, model)
        except InferError as exc:
            return error(400, str(exc))
        if any(tensors.get("stream", [])):
            return error(400, "Streaming is only supported if model is deployed using decoupled mode.")
        fault = self.state.faults.take()
        refused = refusal(fault, error)
        if refused is not None:
            return refused
        limits, seeds = tensors["max_tokens"], tensors.get("seed", [None])
        prompts = [str(p) for p in tensors["text_input"]]
        generations = [
            generate(self.config, prompt, _as_int(_nth(seeds, i)), _as_int(_nth(limits, i)))
            for i, prompt in enumerate(prompts)
        ]
        for generation in generations:
            self._begin(generation)()
        exclude = tensors.get("exclude_input_in_output", [False])
        texts = [
            ("" if _nth(exclude, i) else p) + g.text for i, (p, g) in enumerate(zip(prompts, generations, strict=True))
        ]
        head: dict[str, Any] = {"model_name": self.model, "model_version": "1"}
        if isinstance(header.get("id"), str):
            head = {"id": header["id"], **head}
        values = _outputs(generations, texts)
        return one_shot(_infer_answer(head, values, requested), self.config, fault)

    @staticmethod
    def _requested(header: dict[str, Any], model: str) -> dict[str, bool]:
        """The outputs to return, each with whether it goes back as binary data: the named ones as each asks,
        or every output, binary when the request's `binary_data_output` says so."""
        outputs = header.get("outputs")
        if not outputs:
            binary = (header.get("parameters") or {}).get("binary_data_output") is True
            return dict.fromkeys(_OUTPUTS, binary)
        requested = {}
        for output in outputs:
            name = output.get("name") if isinstance(output, dict) else None
            if name not in _OUTPUTS:
                raise InferError(f"unexpected inference output '{name}' for model '{model}'")
            requested[name] = (output.get("parameters") or {}).get("binary_data") is True
        return requested


def _nth(values: list[Any], i: int) -> Any:
    """Element i of a batched input, or its last one when it has fewer (a scalar sent for the whole batch)."""
    return values[min(i, len(values) - 1)]


def _as_int(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) else None


async def _not_found(request: Request, exc: Exception) -> Response:
    # Triton answers a path it has no handler for with 400 "Not Found"; a wrong method is 405.
    return error(400, "Not Found")


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    return error(405, "Method Not Allowed")


def create_app(config: SimulatorConfig) -> ASGIApp:
    sim = Simulator(config)
    per_model: list[tuple[str, Callable[[Request], Awaitable[Response]], list[str]]] = [
        ("", sim.metadata, ["GET"]),
        ("/ready", sim.model_ready, ["GET"]),
        ("/config", sim.model_config, ["GET"]),
        ("/infer", sim.infer, ["POST"]),
        ("/generate", sim.generate, ["POST"]),
        ("/generate_stream", sim.generate_stream, ["POST"]),
        ("/stats", sim.statistics, ["GET"]),
    ]
    # Each model route also exists for one version (`{v}` is numeric); without it the version policy picks "1".
    models = [
        Route(prefix + suffix, handler, methods=methods)
        for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version:int}")
        for suffix, handler, methods in per_model
    ]
    return Starlette(
        routes=[
            Route("/v2", sim.server),
            Route("/v2/health/live", sim.live),
            Route("/v2/health/ready", sim.ready),
            Route("/v2/repository/index", sim.repository_index, methods=["POST"]),
            Route("/v2/models/stats", sim.statistics),  # before /v2/models/{model}, as Triton matches it
            *models,
        ],
        exception_handlers={404: _not_found, 405: _method_not_allowed},
    )
