"""llama.cpp `llama-server`: native `POST /completion` or OpenAI `POST /v1/completions` (raw prompts, no chat
template), chosen by `api` or negotiated (`auto`: probe `GET /v1/models`, fall back to native)."""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Literal

import httpx
from llama_orch_gen.contracts.config import ReplicaConfig
from llama_orch_gen.contracts.task_request import TaskRequest
from llama_orch_gen.engines.llamacpp import Client
from llama_orch_gen.engines.llamacpp import wire as w
from llama_orch_gen.engines.llamacpp.api.native import completion, health, props, slots
from llama_orch_gen.engines.llamacpp.api.openai import v1_completions, v1_models
from llama_orch_gen.engines.llamacpp.models.completion_request import CompletionRequest
from llama_orch_gen.engines.llamacpp.models.error_response import ErrorResponse
from llama_orch_gen.engines.llamacpp.models.props_response import PropsResponse
from llama_orch_gen.engines.llamacpp.models.props_response_default_generation_settings import (
    PropsResponseDefaultGenerationSettings,
)
from llama_orch_gen.engines.llamacpp.models.text_completion_request import TextCompletionRequest

from llama_orch.adapters.base import EngineProps, EngineVersion
from llama_orch.adapters.http_adapter import HttpAdapter, body_message
from llama_orch.adapters.http_policy import code_for_stream_error, error_for_status
from llama_orch.adapters.streaming import EngineStream, FinishReason, Tally
from llama_orch.determinism import is_greedy, prompt_text
from llama_orch.errors import EngineError, ErrorCode
from llama_orch_runtime.bodies import MalformedBody

__all__ = ["LlamaCppAdapter", "LlamaCppApi"]

LlamaCppApi = Literal["auto", "native", "openai"]

# llama.cpp error `type` → contract code where the type says more than the status; other types (server_error,
# not_found_error, not_supported_error) follow their status.
_TYPE_CODES: dict[str, ErrorCode] = {
    "invalid_request_error": "INVALID_PARAMS",
    "exceed_context_size_error": "INVALID_PARAMS",
    "authentication_error": "UPSTREAM_AUTH",
    "permission_error": "UPSTREAM_AUTH",
    "unavailable_error": "POOL_UNREADY",
}
_STOP_TYPES: dict[str | None, FinishReason] = {"limit": "length", "eos": "stop", "word": "stop", "none": "stop"}

logger = logging.getLogger("llama_orch.adapters")


class LlamaCppAdapter(HttpAdapter):
    engine = "llamacpp"
    model_list_path = "/v1/models"

    @classmethod
    def replica_options(cls, replica: ReplicaConfig) -> dict[str, Any]:
        return {"api": replica.api or "auto", "id_slot": replica.id_slot}

    def __init__(
        self, pool_id: str, replica_id: str, *, api: LlamaCppApi = "auto", id_slot: int | None = None, **kw: Any
    ) -> None:
        super().__init__(pool_id, replica_id, **kw)
        self.api = api
        self.id_slot = id_slot  # pin every task of this replica to one slot (determinism: same slot, same cache)
        self._negotiated: Literal["native", "openai"] | None = None if api == "auto" else api
        self._slots_total: int | None = None  # from the last `props()`, for session slot affinity
        self.client = Client(base_url=self.base_url).set_async_httpx_client(self.http)

    # -- streaming ---------------------------------------------------------------------------------------------

    async def _open(self, task: TaskRequest, seed: int) -> EngineStream:
        sampling = self._sampling(task, seed)
        # `n_predict` on both surfaces: the generated body always carries it (-1 by default) and llama.cpp lets
        # it win over the OpenAI `max_tokens`.
        limit = task.max_tokens or -1
        # `arelay` on both routes: each chunk validated as what `_read` reads of it (`*Read`), the rest skipped.
        if await self._api() == "openai":
            body = TextCompletionRequest(prompt=prompt_text(task), n_predict=limit, **sampling)
            return await v1_completions.arelay(client=self.client, body=body)
        return await completion.arelay(
            client=self.client, body=CompletionRequest(prompt=prompt_text(task), n_predict=limit, **sampling)
        )

    def _sampling(self, task: TaskRequest, seed: int) -> dict[str, Any]:
        greedy = is_greedy(task)
        return {
            "stream": True,
            "seed": seed,
            "temperature": 0.0 if greedy else task.temperature,
            "top_k": 1 if greedy else task.top_k or 0,
            "top_p": 1.0 if greedy else (task.top_p if task.top_p is not None else 1.0),
            "min_p": 0.0,  # the contract's sampler profile has no min_p: switch llama.cpp's default (0.05) off
            "repeat_penalty": task.repeat_penalty if task.repeat_penalty is not None else 1.0,
            "stop": list(task.stop or ()),
            # Reusing a cached prefix changes batch shapes and so, slightly, the numbers: not under `strict`.
            "cache_prompt": task.determinism != "strict",
            "id_slot": self._slot_for(task),
        }

    def _slot_for(self, task: TaskRequest) -> int:
        """The replica's pinned slot; else, for a session asking to reuse its cache, the same slot every turn
        (the slot holds the session's prompt cache); else any free slot (-1)."""
        if self.id_slot is not None:
            return self.id_slot
        if task.session_id is not None and task.kv_hint == "reuse" and self._slots_total:
            digest = hashlib.sha256(task.session_id.encode()).digest()
            return int.from_bytes(digest[:4], "big") % self._slots_total
        return -1

    async def _api(self) -> Literal["native", "openai"]:
        """`auto`: the OpenAI surface if `GET /v1/models` answers, native if it is missing (404); anything else
        (down, unauthorized) decides nothing and is asked again next time."""
        if self._negotiated is None:
            try:
                probe = await self.call(v1_models.asyncio_detailed(client=self.client))
            except EngineError:
                return "native"
            if probe.status_code == 200:
                self._negotiated = "openai"
            elif probe.status_code == 404:
                self._negotiated = "native"
            else:
                return "native"
        return self._negotiated

    def _read(self, item: Any, tally: Tally) -> str:
        if type(item) is w.CompletionChunkRead:
            if item.stop:
                tally.finish_reason = _STOP_TYPES.get(item.stop_type, "stop")
                tally.tokens_in = item.tokens_evaluated
                tally.tokens_out = item.tokens_predicted
                if item.timings is not None:
                    tally.decode_ms = item.timings.predicted_ms
            return item.content
        if type(item) is w.TextCompletionChunkRead:
            if item.usage is not None:
                tally.tokens_in = item.usage.prompt_tokens
                tally.tokens_out = item.usage.completion_tokens
            if item.timings is not None:
                tally.decode_ms = item.timings.predicted_ms
            if not item.choices:
                return ""
            choice = item.choices[0]
            if choice.finish_reason is not None:
                tally.finish_reason = "length" if choice.finish_reason == "length" else "stop"
            return choice.text
        if isinstance(item, w.ErrorResponse):
            detail = item.error
            code = _TYPE_CODES.get(detail.type) or code_for_stream_error(detail.code)
            raise EngineError(code, f"engine error inside the stream ({detail.type}): {detail.message}")
        raise EngineError("INTERNAL", f"unexpected llama.cpp stream item {type(item).__name__}")

    def _status_error(self, status: int, parsed: Any, content: bytes, headers: httpx.Headers) -> EngineError:
        if isinstance(parsed, ErrorResponse):
            detail = parsed.error
            return error_for_status(status, detail.message, headers, _TYPE_CODES.get(detail.type_))
        return error_for_status(status, body_message(content), headers)

    # -- control -----------------------------------------------------------------------------------------------

    async def _fetch_version(self) -> EngineVersion:
        found = await self._props()
        version = found.build_info if isinstance(found.build_info, str) else "unknown"  # older builds: no build_info
        return EngineVersion(engine=self.engine, version=version, model=self.model or _model_name(found))

    async def _props(self) -> PropsResponse:
        response = await props.asyncio_detailed(client=self.client)
        if not isinstance(response.parsed, PropsResponse):
            raise self.refusal(response.status_code, response.parsed, response.content, response.headers)
        return response.parsed

    async def _probe_health(self) -> Any:
        return await health.asyncio_detailed(client=self.client)

    async def props(self) -> EngineProps:
        found = await self.call(self._props())
        free: int | None = None
        try:
            answer = await self.call(slots.asyncio_detailed(client=self.client))
        except EngineError as error:
            if not isinstance(error.__cause__, MalformedBody):
                raise
            # /slots is informational: an answer this reader cannot read leaves the free count unknown.
            logger.warning("replica %s: unreadable /slots answer: %s", self.replica_id, error.message)
        else:
            if isinstance(answer.parsed, list):  # /slots may be disabled (--no-slots → 501)
                free = sum(not slot.is_processing for slot in answer.parsed)
        settings = found.default_generation_settings
        n_ctx = settings.n_ctx if isinstance(settings, PropsResponseDefaultGenerationSettings) else None
        self._slots_total = found.total_slots if isinstance(found.total_slots, int) else None
        return EngineProps(
            slots_total=self._slots_total,
            slots_free=free,
            ctx_size=n_ctx if isinstance(n_ctx, int) else None,
            model=_model_name(found),
            raw=found.to_dict(),
        )


def _model_name(found: PropsResponse) -> str | None:
    """The alias, else the model path (both informational: older builds have neither)."""
    for name in (found.model_alias, found.model_path):
        if isinstance(name, str):
            return name
    return None
