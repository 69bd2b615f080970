"""Hugging Face TGI: native `POST /generate_stream` with `details`, so the final event carries the engine's own
finish reason and token counts."""

from __future__ import annotations

import json
from typing import Any

import httpx
from llama_orch_gen.contracts.task_request import TaskRequest
from llama_orch_gen.engines.tgi import AuthenticatedClient
from llama_orch_gen.engines.tgi import wire as w
from llama_orch_gen.engines.tgi.api.native import generate_stream, health, info
from llama_orch_gen.engines.tgi.models.generate_parameters import GenerateParameters
from llama_orch_gen.engines.tgi.models.generate_request import GenerateRequest
from llama_orch_gen.engines.tgi.models.info import Info
from llama_orch_gen.engines.tgi.types import UNSET

from llama_orch.adapters.base import EngineProps, EngineVersion
from llama_orch.adapters.http_adapter import HttpAdapter, body_message
from llama_orch.adapters.http_policy import error_for_status
from llama_orch.adapters.streaming import EngineStream, Tally
from llama_orch.determinism import is_greedy, prompt_text
from llama_orch.errors import EngineError, ErrorCode

__all__ = ["TgiAdapter"]

# TGI `error_type` → contract code, for in-stream errors; a refusal (non-2xx) follows its status unless its type
# is one of `_REFUSAL_TYPES` (a 424 "generation" refusal is a failed shard: retried like a 5xx).
_REFUSAL_TYPES = frozenset({"validation", "template_error", "missing_template_variable", "tool_error", "overloaded"})
_TYPE_CODES: dict[str, ErrorCode] = {
    "validation": "INVALID_PARAMS",
    "template_error": "INVALID_PARAMS",
    "missing_template_variable": "INVALID_PARAMS",
    "tool_error": "INVALID_PARAMS",
    "overloaded": "ADMISSION_REJECT",
    "healthcheck": "POOL_UNREADY",
    "incomplete_generation": "WORKER_RESET",
    "incomplete_generation_stream": "WORKER_RESET",
    "generation": "INTERNAL",
    "stream_serialization_error": "INTERNAL",
}


class TgiAdapter(HttpAdapter):
    engine = "tgi"
    model_list_path = "/v1/models"

    def __init__(self, pool_id: str, replica_id: str, **kw: Any) -> None:
        super().__init__(pool_id, replica_id, **kw)
        # The token rides on `self.http`; the generated client only needs to be the authenticated kind.
        self.client = AuthenticatedClient(base_url=self.base_url, token="").set_async_httpx_client(self.http)

    async def _open(self, task: TaskRequest, seed: int) -> EngineStream:
        greedy = is_greedy(task)
        # TGI rejects the neutral values (temperature must be > 0, top_p < 1, top_k > 0): leave them unset.
        parameters = GenerateParameters(
            details=True,
            do_sample=not greedy,
            max_new_tokens=task.max_tokens or UNSET,
            seed=seed,
            return_full_text=False,
            temperature=UNSET if greedy or not task.temperature else task.temperature,
            top_p=UNSET if greedy or task.top_p is None or task.top_p >= 1 else task.top_p,
            top_k=UNSET if greedy or not task.top_k else task.top_k,
            repetition_penalty=UNSET if task.repeat_penalty in (None, 1) else task.repeat_penalty,
            stop=list(task.stop or ()),
        )
        body = GenerateRequest(inputs=prompt_text(task), parameters=parameters)
        return await generate_stream.astream(client=self.client, body=body)

    def _read(self, item: Any, tally: Tally) -> str:
        if type(item) is w.StreamResponse:
            details = item.details
            if details is not None:
                tally.finish_reason = "length" if details.finish_reason == "length" else "stop"
                tally.tokens_out = details.generated_tokens
                tally.tokens_in = details.input_length
            return "" if item.token.special else item.token.text
        if isinstance(item, w.ErrorResponse):
            code = _TYPE_CODES.get(item.error_type or "", "INTERNAL")
            raise EngineError(code, f"engine error inside the stream ({item.error_type}): {item.error}")
        raise EngineError("INTERNAL", f"unexpected TGI stream item {type(item).__name__}")

    def _status_error(self, status: int, parsed: Any, content: bytes, headers: httpx.Headers) -> EngineError:
        try:
            error_type = json.loads(content).get("error_type")
        except (ValueError, AttributeError):
            error_type = None  # 401 has an empty body; axum's own 4xx are plain text
        code = _TYPE_CODES[error_type] if error_type in _REFUSAL_TYPES else None
        return error_for_status(status, body_message(content), headers, code)

    async def _info(self) -> Info:
        answer = await info.asyncio_detailed(client=self.client)
        if not isinstance(answer.parsed, Info):
            raise self.refusal(answer.status_code, answer.parsed, answer.content, answer.headers)
        return answer.parsed

    async def _fetch_version(self) -> EngineVersion:
        found = await self._info()
        sha = found.sha if isinstance(found.sha, str) else None
        model_sha = found.model_sha if isinstance(found.model_sha, str) else None
        return EngineVersion(
            engine=self.engine,
            version=found.version if sha is None else f"{found.version}+{sha[:12]}",
            model=self.model or found.model_id,
            model_digest=model_sha,
        )

    async def _probe_health(self) -> Any:
        return await health.asyncio_detailed(client=self.client)

    async def props(self) -> EngineProps:
        """TGI admits `max_concurrent_requests` at once (then 429): reported as its slots."""
        found = await self.call(self._info())
        return EngineProps(
            slots_total=found.max_concurrent_requests if isinstance(found.max_concurrent_requests, int) else None,
            ctx_size=found.max_total_tokens if isinstance(found.max_total_tokens, int) else None,
            model=found.model_id,
            raw=found.to_dict(),
        )
