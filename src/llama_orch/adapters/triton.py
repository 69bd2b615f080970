"""Triton Inference Server with a TensorRT-LLM model: `POST /v2/models/{model}/generate_stream` (the generate
extension; keys that name model inputs become tensors). Triton's stream has no end marker: EOF is the end."""

from __future__ import annotations

from typing import Any

from llama_orch_gen.contracts.task_request import TaskRequest
from llama_orch_gen.engines.triton import Client
from llama_orch_gen.engines.triton import wire as w
from llama_orch_gen.engines.triton.api.generate import generate_stream
from llama_orch_gen.engines.triton.api.health import model_ready
from llama_orch_gen.engines.triton.api.metadata import model_metadata, server_metadata
from llama_orch_gen.engines.triton.models.generate_request import GenerateRequest
from llama_orch_gen.engines.triton.models.model_metadata import ModelMetadata
from llama_orch_gen.engines.triton.models.server_metadata import ServerMetadata
from llama_orch_gen.engines.triton.types import UNSET

from llama_orch.adapters.base import EngineProps, EngineVersion
from llama_orch.adapters.http_adapter import HttpAdapter
from llama_orch.adapters.streaming import EngineStream, Tally
from llama_orch.determinism import is_greedy, prompt_text
from llama_orch.errors import ConfigError, EngineError

__all__ = ["TritonAdapter"]


class TritonAdapter(HttpAdapter):
    engine = "triton"

    def __init__(self, pool_id: str, replica_id: str, **kw: Any) -> None:
        super().__init__(pool_id, replica_id, **kw)
        if not self.model:
            raise ConfigError(f"triton replica {replica_id!r}: a model name is required (it is part of every path)")
        self.model_name: str = self.model
        self.client = Client(base_url=self.base_url).set_async_httpx_client(self.http)

    async def _open(self, task: TaskRequest, seed: int) -> EngineStream:
        greedy = is_greedy(task)
        body = GenerateRequest(
            text_input=prompt_text(task),
            max_tokens=task.max_tokens or 128,
            stream=True,
            exclude_input_in_output=True,
            seed=seed,
            # TensorRT-LLM decodes greedily with top_k 1; temperature and top_p are then irrelevant.
            top_k=1 if greedy else (task.top_k or UNSET),
            top_p=UNSET if greedy or task.top_p is None else task.top_p,
            temperature=UNSET if greedy else task.temperature or UNSET,
            repetition_penalty=task.repeat_penalty if task.repeat_penalty not in (None, 1) else UNSET,
            # Older ensemble templates declare both as required inputs: "" means none.
            stop_words=list(task.stop) if task.stop else "",
            bad_words="",
        )
        return await generate_stream.astream(self.model_name, client=self.client, body=body)

    def _read(self, item: Any, tally: Tally) -> str:
        if type(item) is w.GenerateResponse:
            text = item.text_output
            if isinstance(text, list):  # several sequences: only the first is relayed
                text = text[0] if text else ""
            # One streamed response per generated token; Triton names no finish reason, so infer it.
            tally.tokens_out = (tally.tokens_out or 0) + 1
            if tally.max_tokens is not None and tally.tokens_out >= tally.max_tokens:
                tally.finish_reason = "length"
            return text or ""
        if isinstance(item, w.ErrorResponse):
            raise EngineError("INTERNAL", f"engine error inside the stream: {item.error}")
        raise EngineError("INTERNAL", f"unexpected Triton stream item {type(item).__name__}")

    async def _fetch_version(self) -> EngineVersion:
        server = await server_metadata.asyncio_detailed(client=self.client)
        if not isinstance(server.parsed, ServerMetadata):
            raise self.refusal(server.status_code, server.parsed, server.content, server.headers)
        model = await model_metadata.asyncio_detailed(self.model_name, client=self.client)
        label = self.model_name
        if isinstance(model.parsed, ModelMetadata):
            versions = model.parsed.versions if isinstance(model.parsed.versions, list) else []
            label = f"{model.parsed.name}:{versions[-1]}" if versions else model.parsed.name
            if isinstance(model.parsed.platform, str):
                label = f"{label} ({model.parsed.platform})"
        return EngineVersion(engine=self.engine, version=server.parsed.version, model=label)

    async def _probe_health(self) -> Any:
        """Our model's readiness is what matters (Triton answers 400, not 503, when not live or not ready)."""
        return await model_ready.asyncio_detailed(self.model_name, client=self.client)

    async def props(self) -> EngineProps:
        """Triton reports no slots; the model's metadata (platform, inputs) is what it tells."""
        answer = await self.call(model_metadata.asyncio_detailed(self.model_name, client=self.client))
        if not isinstance(answer.parsed, ModelMetadata):
            raise self.refusal(answer.status_code, answer.parsed, answer.content, answer.headers)
        return EngineProps(model=answer.parsed.name, raw=answer.parsed.to_dict())
