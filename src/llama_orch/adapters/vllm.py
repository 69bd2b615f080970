"""vLLM: OpenAI-compatible `POST /v1/completions` with a raw prompt, always asking for the usage chunk."""

from __future__ import annotations

import re
from typing import Any

import httpx
from llama_orch_gen.contracts.task_request import TaskRequest
from llama_orch_gen.engines.vllm import Client
from llama_orch_gen.engines.vllm import wire as w
from llama_orch_gen.engines.vllm.api.openai import v1_completions, v1_models
from llama_orch_gen.engines.vllm.api.server import health, metrics, version
from llama_orch_gen.engines.vllm.models.completion_request import CompletionRequest
from llama_orch_gen.engines.vllm.models.model_list import ModelList
from llama_orch_gen.engines.vllm.models.stream_options import StreamOptions
from llama_orch_gen.engines.vllm.models.version_response import VersionResponse
from llama_orch_gen.engines.vllm.types import UNSET

from llama_orch.adapters.base import EngineLoad, EngineProps, EngineVersion
from llama_orch.adapters.http_adapter import HttpAdapter, body_message
from llama_orch.adapters.http_policy import code_for_stream_error, error_for_status
from llama_orch.adapters.streaming import EngineStream, Tally
from llama_orch.determinism import is_greedy, prompt_text
from llama_orch.errors import EngineError, ErrorCode

__all__ = ["VllmAdapter", "engine_load"]

# Gauges of vLLM's /metrics, one sample per engine (data-parallel servers have several): `name{labels} value`.
_GAUGE = re.compile(rb"^vllm:num_requests_(running|waiting)\{[^}]*\} ([0-9.eE+-]+)$", re.MULTILINE)


class VllmAdapter(HttpAdapter):
    engine = "vllm"
    model_list_path = "/v1/models"

    def __init__(self, pool_id: str, replica_id: str, **kw: Any) -> None:
        super().__init__(pool_id, replica_id, **kw)
        self.client = Client(base_url=self.base_url).set_async_httpx_client(self.http)

    async def _open(self, task: TaskRequest, seed: int) -> EngineStream:
        greedy = is_greedy(task)
        body = CompletionRequest(
            prompt=prompt_text(task),
            model=self.model or UNSET,
            max_tokens=task.max_tokens or UNSET,
            stream=True,
            # vLLM sends usage only when asked (and the default flipped between releases): always ask.
            stream_options=StreamOptions(include_usage=True),
            seed=seed,
            temperature=0.0 if greedy else (task.temperature or 0.0),
            top_p=1.0 if greedy or task.top_p is None else task.top_p,
            top_k=UNSET if greedy or not task.top_k else task.top_k,  # unset = disabled on every vLLM release
            repetition_penalty=task.repeat_penalty if task.repeat_penalty is not None else 1.0,
            stop=list(task.stop or ()),
        )
        return await v1_completions.astream(client=self.client, body=body)

    def _read(self, item: Any, tally: Tally) -> str:
        if type(item) is w.CompletionChunk:
            if item.usage is not None:
                tally.tokens_in = item.usage.prompt_tokens
                tally.tokens_out = item.usage.completion_tokens
            if not item.choices:
                return ""
            choice = item.choices[0]
            if choice.finish_reason is not None:
                if choice.finish_reason == "abort":
                    raise EngineError("WORKER_RESET", "the engine aborted the request")
                tally.finish_reason = "length" if choice.finish_reason == "length" else "stop"
            return choice.text
        if isinstance(item, w.ErrorResponse):
            detail = item.error
            raise EngineError(
                code_for_stream_error(detail.code), f"engine error inside the stream ({detail.type}): {detail.message}"
            )
        raise EngineError("INTERNAL", f"unexpected vLLM stream item {type(item).__name__}")

    def _status_error(self, status: int, parsed: Any, content: bytes, headers: httpx.Headers) -> EngineError:
        try:
            body = w.AnyErrorResponse.model_validate_json(content).root
        except ValueError:  # not vLLM's error shape (a proxy's page, FastAPI's `{"detail"}`)
            return error_for_status(status, body_message(content), headers)
        detail = body.error if isinstance(body, w.ErrorResponse) else body
        # vLLM names the refused parameter: a 404 about `model` is a model it does not serve.
        code: ErrorCode | None = "MODEL_NOT_SERVED" if status == 404 and detail.param == "model" else None
        return error_for_status(status, detail.message, headers, code)

    async def _fetch_version(self) -> EngineVersion:
        answer = await version.asyncio_detailed(client=self.client)
        if not isinstance(answer.parsed, VersionResponse):
            raise self.refusal(answer.status_code, answer.parsed, answer.content, answer.headers)
        return EngineVersion(engine=self.engine, version=answer.parsed.version, model=self.model)

    async def _probe_health(self) -> Any:
        return await health.asyncio_detailed(client=self.client)

    async def props(self) -> EngineProps:
        """vLLM batches continuously and reports no slots; the served model and its context length."""
        answer = await self.call(v1_models.asyncio_detailed(client=self.client))
        if not isinstance(answer.parsed, ModelList):
            raise self.refusal(answer.status_code, answer.parsed, answer.content, answer.headers)
        card = next(
            (m for m in answer.parsed.data if m.id == self.model), answer.parsed.data[0] if answer.parsed.data else None
        )
        max_len = None if card is None else card.max_model_len
        return EngineProps(
            model=None if card is None else card.id,
            ctx_size=max_len if isinstance(max_len, int) else None,
            raw=answer.parsed.to_dict(),
        )

    async def load(self) -> EngineLoad | None:
        """vLLM's own running and waiting counts (every client's requests): one extra call per probe."""
        answer = await self.call(metrics.asyncio_detailed(client=self.client))
        return engine_load(answer.content) if answer.status_code == 200 else None


def engine_load(exposition: bytes) -> EngineLoad | None:
    """Running and waiting requests summed over engines; None when a release stops exporting either gauge."""
    totals: dict[bytes, float] = {}
    for kind, value in _GAUGE.findall(exposition):
        totals[kind] = totals.get(kind, 0.0) + float(value)
    if set(totals) != {b"running", b"waiting"}:
        return None
    return EngineLoad(running=int(totals[b"running"]), waiting=int(totals[b"waiting"]))
